"""diffeic: extreme image compression with latent feature guidance and a diffusion prior."""
__version__ = "0.1.0"
