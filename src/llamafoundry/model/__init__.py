"""Model backends behind the ModelRunner protocol (model/base.py)."""
