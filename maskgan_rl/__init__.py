"""maskgan-rl: MaskGAN text in-filling trained as a distributed RL job on Ray RLlib."""

__version__ = "0.1.0"
