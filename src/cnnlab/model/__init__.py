"""Models: architectures as data (TOML), cnnlab's layers, first-layer kernels, the builder, and the
shape and parameter arithmetic of every layer (`cnnlab summary --explain`)."""
