"""Built-in model servers: ``server.LLMServer`` (continuous-batching text generation) and
``embeddings.EmbeddingServer`` (pooled sentence embeddings). See docs/llm.md."""
