"""SER Studio core library: corpora, audio, features, models, honest evaluation, results and inference.

Importing ``ser_core`` loads no Streamlit and no deep-learning framework; each family imports its framework
when one of its models is created.
"""
__version__ = "0.1.0"

from .errors import SERError  # noqa: E402,F401
