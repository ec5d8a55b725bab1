"""Model images and inference: the TGI image recipe and build tooling per preset (``images``), the
transformers runtime that serves TGI's HTTP API (``runtime``), and ``kaito generate``."""
