"""``prescore``, the operator CLI: its commands (``main``), the model and run commands, and
how it reports (``output``). ``python -m prescore.cli`` runs it too."""
