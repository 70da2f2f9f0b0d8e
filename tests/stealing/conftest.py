"""Small victims for the stealing tests: the paper CNN and an MLP, randomly initialised."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec.models.classifiers import make_model
from rsec.stealing import AuxModel


class TinyMLP(nn.Module):
  """A random model with a linear last layer named 'out' (MAD's G is over it)."""
  num_classes: int = 5
  hidden: int = 7

  @nn.compact
  def __call__(self, x, train=False):
    h = jnp.tanh(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes, name="out")(h)


def aux_model(module, seed, input_shape):
  return AuxModel(module.apply, module.init(jax.random.key(seed),
                                            jnp.zeros((1,) + input_shape), train=False))


@pytest.fixture(scope="session")
def paper_cnn():
  """(AuxModel, logits_fn) of a randomly initialised paper CNN on 28x28x1, 10 classes."""
  model = make_model("paper_classifier", 10)
  aux = aux_model(model, 1, (28, 28, 1))
  return aux, lambda x: model.apply(aux.variables, x, train=False)


@pytest.fixture(scope="session")
def images():
  return np.random.default_rng(0).random((64, 28, 28, 1), np.float32)


def random_posteriors(rng, n, k, sharp=1.0):
  logits = rng.normal(size=(n, k)) * sharp
  p = np.exp(logits - logits.max(1, keepdims=True))
  return (p / p.sum(1, keepdims=True)).astype(np.float32)


def hard_posteriors(k):
  """One-hot, near-one-hot and uniform rows: where unclamped defences break."""
  eye = np.eye(k, dtype=np.float32)
  near = np.full((k, k), 1e-9, np.float32)
  near[np.arange(k), np.arange(k)] = 1 - (k - 1) * 1e-9
  return np.concatenate([eye, near, np.full((1, k), 1 / k, np.float32)])
