"""The hotel demo: one example of prescore's contract (data, models, declarations)."""
