"""What goes into Redis, byte for byte, with no I/O.

The key layout (``keys``, ``table_keys``) and the payload codecs (``codec``, ``compact``,
``ranking_payloads``, ``label_payloads``). Golden tests pin these bytes.
"""
