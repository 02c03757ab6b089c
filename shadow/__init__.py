"""shadow: route, mirror and capture live traffic; diff, compare and judge a cutover."""

__version__ = "0.1.0"
