"""OTLP: the receiver that lands spans in a capture (receiver.py), its payload decoding (decode.py)."""
