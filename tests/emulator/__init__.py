"""The Metal emulator's tests (``mlx_embag.emulator``); ``harness`` runs kernels for them."""
