"""The algorithm registry: `gan.algo` picks one entry. Adding an RLlib algorithm is one entry here.

(Placeholder names only: the builders are filled in with the adversarial stage.)
"""

ALGORITHMS: dict = {"reinforce": None, "ppo": None, "appo": None, "impala": None}
