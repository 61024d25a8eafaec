"""The integration tier: conversions of small real models, sharing the session fixtures of
``tests/conftest.py`` (the digits model, its three-point conversion ``digits_points``)."""
