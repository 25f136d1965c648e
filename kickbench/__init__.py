"""kickbench: what compressing an LLM really costs, measured on knowledge-intensive tasks."""

__version__ = "0.1.0"
