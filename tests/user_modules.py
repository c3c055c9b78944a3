"""Source text of a user's own model module, as `rnnwatch export --module my_model:make` imports it.

A file the tests write into a temporary folder (not importable from here: it imports torch, which the runtime's
tests must not need). The smoother forecasts an EWMA of the last values in message units, with its own state.
"""

SMOOTHER_MODULE = '''
import torch
from rnnwatch.export import StateSpec, StepModule

class Smoother(StepModule):
    """Forecast = EWMA of the last values, in message units (its own state)."""
    def __init__(self):
        super().__init__()
        self.n_features = 1
        self.alpha = torch.nn.Parameter(torch.tensor(0.3))

    def state_spec(self):
        return [StateSpec("m", (1,)), StateSpec("seen", (1,))]

    def step(self, x, state):
        m = torch.where(state["seen"] > 0, (1 - self.alpha) * state["m"] + self.alpha * x, x)
        return m, {"m": m, "seen": torch.ones_like(state["seen"])}

def make():
    return Smoother()
'''
