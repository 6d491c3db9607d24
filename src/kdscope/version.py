"""The version of kdscope, in a module of its own so that any module may read it without
importing the public facade (``kdscope/__init__.py``)."""

__version__ = "0.1.0"
