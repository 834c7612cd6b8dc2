"""The data plane's protocol adapters: native JSON, Open Inference Protocol v2 and OpenAI."""
