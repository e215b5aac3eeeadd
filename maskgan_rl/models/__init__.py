"""The torch networks of MaskGAN: language model, generator, discriminator and critic."""

from maskgan_rl.models.critic import Critic
from maskgan_rl.models.discriminator import Discriminator, discriminator_loss, log_real_prob
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.language_model import LanguageModel

__all__ = ["Critic", "Discriminator", "Generator", "LanguageModel", "discriminator_loss", "log_real_prob"]
