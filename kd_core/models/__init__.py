"""Model building and loading: tokenizers, tiny random pipelines, pipeline loading."""
