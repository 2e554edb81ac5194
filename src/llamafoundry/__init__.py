"""llamafoundry: self-hosted Meta Llama serving behind the Azure AI Model Inference API."""

__version__ = "0.1.0"
