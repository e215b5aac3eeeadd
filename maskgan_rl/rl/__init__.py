"""MaskGAN's adversarial stage on Ray RLlib: policy module, learners, discriminator actor, callbacks."""
