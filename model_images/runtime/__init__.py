"""The transformers runtime: serves TGI's HTTP API from a local Hugging Face model directory,
with continuous batching, on CPU or GPU. Imports nothing heavy; see ``serve`` and ``engine``."""
