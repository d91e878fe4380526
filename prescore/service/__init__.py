"""What the lookup and fallback services share.

JSON errors and bodies (``web``), granian as a library (``serving``) and the images'
``healthcheck``.
"""
