"""Model images: the TGI image recipe with baked-in weights, weight checks, the build tool and the
build matrix taken from the preset catalogue."""
