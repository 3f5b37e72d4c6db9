"""The sums the engine adds up, the accuracy and loss derived from them, and chance."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Metrics:
    """Totals over a dataset; accuracy and loss are derived from them."""

    correct: int  # examples whose arg-max logit is the label
    loss_sum: float  # sum of per-example cross-entropy, in nats
    count: int  # examples evaluated

    @property
    def accuracy(self) -> float:
        return self.correct / self.count

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy

    @property
    def loss(self) -> float:
        """Mean cross-entropy, in nats."""
        return self.loss_sum / self.count

    def to_dict(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "loss": self.loss, "num_examples": self.count}


# Chance: the classifier that guesses, accuracy p = 1/C and loss log C on C classes. Its
# accuracy on N examples has the binomial standard error sqrt(p (1 - p) / N). Two questions
# are asked of a measured model, each a test against that classifier (docs/methods.md):


def chance_stderr(num_classes: int, num_examples: int) -> float:
    """The standard error sqrt(p (1 - p) / N) of a guessing classifier's accuracy, p = 1/C."""
    chance = 1.0 / num_classes
    return math.sqrt(chance * (1 - chance) / max(num_examples, 1))


def no_better_than_chance(accuracy: float, num_classes: int, num_examples: int) -> bool:
    """Accuracy no more than two standard errors above 1/C: no evidence the model beats
    guessing (one-sided, about 98% of guessing classifiers pass). Asked of the endpoints
    of a path: when both are, the path says nothing."""
    return accuracy <= 1.0 / num_classes + 2 * chance_stderr(num_classes, num_examples)


def at_chance(loss: float, accuracy: float, num_classes: int, num_examples: int) -> bool:
    """Loss at least log C, or accuracy within one standard error of 1/C: the model is the
    guessing classifier, in its loss or its accuracy. Asked of a perturbed model: there the
    sharpness tends to log C - L(w), whatever the model, and says nothing."""
    near = abs(accuracy - 1.0 / num_classes) <= chance_stderr(num_classes, num_examples)
    return loss >= math.log(num_classes) or near
