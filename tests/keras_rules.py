"""Keras 3's optimizer update rules in plain NumPy, the reference for tests/test_optimizers.py.

Transcribed line by line from keras/src/optimizers/ (Keras 3.x): base_optimizer.py for what one
`apply(grads)` does (weight decay, then every variable's `update_step`, then `iterations += 1`), and
sgd.py, adam.py, adamw.py, nadam.py, rmsprop.py, adagrad.py, adamax.py for each `update_step`.
Deliberately independent of convnet (no convnet import): it keeps Keras's structure (one `iterations`
counter, Nadam's single `u_product`), where convnet keeps per-parameter state.

    >>> rule = RULES["sgd"]([np.array([1.0, 2.0])], learning_rate=0.5)
    >>> rule.apply([np.array([1.0, -1.0])])
    >>> rule.variables[0].tolist()
    [0.5, 2.5]
"""
from __future__ import annotations

import numpy as np


class KerasRule:
    """Keras's BaseOptimizer.apply without clipping, EMA, gradient accumulation or loss scaling.

    `variables` are updated in place, in their own dtype, as Keras casts everything to the variable's dtype.
    """

    defaults: dict = {}
    learning_rate_default = 0.001

    def __init__(self, variables, learning_rate=None, **hyper):
        unknown = set(hyper) - set(self.defaults)
        assert not unknown, f"{type(self).__name__} has no {sorted(unknown)}"
        self.variables = variables
        self.learning_rate = self.learning_rate_default if learning_rate is None else learning_rate
        self.h = {**self.defaults, **hyper}
        self.iterations = 0
        self.build()

    def zeros(self):
        return [np.zeros_like(v) for v in self.variables]

    def build(self):
        pass

    def apply(self, grads, learning_rate=None):
        """One optimizer step; `learning_rate` is the rate for this step (a schedule's value), else the fixed one."""
        lr = self.learning_rate if learning_rate is None else learning_rate
        self.apply_weight_decay(lr)
        self.before_update()
        for index, (variable, gradient) in enumerate(zip(self.variables, grads)):
            self.update_step(index, gradient.astype(variable.dtype), variable, variable.dtype.type(lr))
        self.iterations += 1

    def apply_weight_decay(self, lr):
        """base_optimizer.py `_apply_weight_decay`: variable.assign(variable - variable * wd * lr)."""
        wd = self.h.get("weight_decay")
        if wd is None:
            return
        for variable in self.variables:
            variable[...] = variable - variable * variable.dtype.type(wd) * variable.dtype.type(lr)

    def before_update(self):
        """What `_backend_update_step` does before the variables' updates (Nadam's u_product)."""

    def update_step(self, index, gradient, variable, lr):
        raise NotImplementedError


class SGD(KerasRule):
    defaults = {"momentum": 0.0, "nesterov": False, "weight_decay": None}
    learning_rate_default = 0.01

    def build(self):
        self.momentums = self.zeros() if self.h["momentum"] != 0 else []

    def update_step(self, index, gradient, variable, lr):
        if self.h["momentum"] != 0:
            m = self.momentums[index]
            momentum = variable.dtype.type(self.h["momentum"])
            m[...] = m * momentum - gradient * lr
            if self.h["nesterov"]:
                variable += m * momentum - gradient * lr
            else:
                variable += m
        else:
            variable -= gradient * lr


class Adam(KerasRule):
    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False, "weight_decay": None}

    def build(self):
        self.m, self.v = self.zeros(), self.zeros()
        if self.h["amsgrad"]:
            self.v_hat = self.zeros()

    def update_step(self, index, gradient, variable, lr):
        cast = variable.dtype.type
        local_step = cast(self.iterations + 1)
        beta_1_power = cast(self.h["beta_1"]) ** local_step
        beta_2_power = cast(self.h["beta_2"]) ** local_step
        m, v = self.m[index], self.v[index]
        alpha = lr * np.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        m += (gradient - m) * cast(1 - self.h["beta_1"])
        v += (np.square(gradient) - v) * cast(1 - self.h["beta_2"])
        if self.h["amsgrad"]:
            v_hat = self.v_hat[index]
            v_hat[...] = np.maximum(v_hat, v)
            v = v_hat
        variable -= m * alpha / (np.sqrt(v) + cast(self.h["epsilon"]))


class AdamW(Adam):
    """adamw.py: Adam plus the base optimizer's weight decay, 0.004 by default."""

    defaults = {**Adam.defaults, "weight_decay": 0.004}


class Nadam(KerasRule):
    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "weight_decay": None}

    def build(self):
        self.m, self.v = self.zeros(), self.zeros()
        self.u_product = 1.0

    def before_update(self):
        # Nadam._backend_update_step, before the variables' updates
        self.u_product = self.u_product * self.h["beta_1"] * (1.0 - 0.5 * 0.96 ** (self.iterations + 1))

    def update_step(self, index, gradient, variable, lr):
        cast = variable.dtype.type
        local_step, next_step = cast(self.iterations + 1), cast(self.iterations + 2)
        decay, beta_1, beta_2 = cast(0.96), cast(self.h["beta_1"]), cast(self.h["beta_2"])
        u_t = beta_1 * (1.0 - 0.5 * decay ** local_step)
        u_t_1 = beta_1 * (1.0 - 0.5 * decay ** next_step)
        u_product_t = cast(self.u_product)
        u_product_t_1 = u_product_t * u_t_1
        beta_2_power = beta_2 ** local_step
        m, v = self.m[index], self.v[index]
        m += (gradient - m) * (1 - beta_1)
        v += (np.square(gradient) - v) * (1 - beta_2)
        m_hat = u_t_1 * m / (1 - u_product_t_1) + (1 - u_t) * gradient / (1 - u_product_t)
        v_hat = v / (1 - beta_2_power)
        variable -= m_hat * lr / (np.sqrt(v_hat) + cast(self.h["epsilon"]))


class RMSprop(KerasRule):
    defaults = {"rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False, "weight_decay": None}

    def build(self):
        self.velocities = self.zeros()
        self.momentums = self.zeros() if self.h["momentum"] > 0 else []
        self.average_gradients = self.zeros() if self.h["centered"] else []

    def update_step(self, index, gradient, variable, lr):
        cast = variable.dtype.type
        rho, epsilon = cast(self.h["rho"]), cast(self.h["epsilon"])
        velocity = self.velocities[index]
        velocity[...] = rho * velocity + (1 - rho) * np.square(gradient)
        if self.h["centered"]:
            average_grad = self.average_gradients[index]
            average_grad[...] = rho * average_grad + (1 - rho) * gradient
            denominator = velocity - np.square(average_grad) + epsilon
        else:
            denominator = velocity + epsilon
        increment = lr * gradient / np.sqrt(denominator)
        if self.h["momentum"] > 0:
            momentum = self.momentums[index]
            momentum[...] = cast(self.h["momentum"]) * momentum + increment
            variable -= momentum
        else:
            variable -= increment


class Adagrad(KerasRule):
    defaults = {"initial_accumulator_value": 0.1, "epsilon": 1e-7, "weight_decay": None}

    def build(self):
        self.accumulators = [np.full_like(v, self.h["initial_accumulator_value"]) for v in self.variables]

    def update_step(self, index, gradient, variable, lr):
        accumulator = self.accumulators[index]
        accumulator += np.square(gradient)
        variable -= lr * gradient / np.sqrt(accumulator + variable.dtype.type(self.h["epsilon"]))


class Adamax(KerasRule):
    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "weight_decay": None}

    def build(self):
        self.m, self.u = self.zeros(), self.zeros()

    def update_step(self, index, gradient, variable, lr):
        cast = variable.dtype.type
        beta_1_power = cast(self.h["beta_1"]) ** cast(self.iterations + 1)
        m, u = self.m[index], self.u[index]
        m += (gradient - m) * cast(1 - self.h["beta_1"])
        u[...] = np.maximum(cast(self.h["beta_2"]) * u, np.abs(gradient))
        variable -= lr * m / ((1 - beta_1_power) * (u + cast(self.h["epsilon"])))


RULES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "nadam": Nadam, "rmsprop": RMSprop, "adagrad": Adagrad,
         "adamax": Adamax}
