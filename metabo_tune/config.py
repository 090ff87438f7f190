"""Typed, validated run configuration.

The three sections keep the predecessor's YAML key names so its configs load unchanged. Keys the
predecessor has but that do nothing (its disabled Phase 2, plotting, its LLM loop) are accepted with a
warning; anything else unknown is an error that names the file, the key and the closest valid key.
"""

from __future__ import annotations

import difflib
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line meant for the user."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


BUNDLED_MODELS = {"textbook": "textbook.xml.gz", "e_coli_core": "textbook.xml.gz", "iJO1366": "iJO1366.xml.gz",
                  "salmonella": "salmonella.xml.gz"}  # name: file in cobra's wheel (cobra.data), read offline
MODEL_SUFFIXES = (".xml", ".xml.gz", ".sbml", ".json")
RANDOM_SIZES = {"n_metabolites": 100, "n_reactions": 256}


class SimulationConfig(_Section):
    """The ground-truth network and its trajectories (reference trainer.md §1.1)."""

    network: str = Field(
        "random", description="'random': the predecessor's generator; a model bundled with cobra (BUNDLED_MODELS); "
                              "or a path to an SBML (.xml, .xml.gz, .sbml) or cobra JSON file (metabo_tune.networks).")
    ignore_metabolites: list[str] = Field(
        default_factory=list, description="Model networks: currency metabolites left out of S and the rate laws, "
                                          "matched by id or by id without its compartment suffix (h matches h_c).")
    metabolite_types: Literal["generator", "compartment"] = Field(
        "generator", description="Model networks: types in index blocks as the generator assigns them, or one per "
                                 "compartment (n_metabolite_types must then equal the number of compartments).")
    n_metabolites: int | None = Field(None, ge=3, description="Random networks only (default 100).")
    n_metabolite_types: int = Field(2, ge=1)
    n_reactions: int | None = Field(None, ge=1, description="Random networks only (default 256).")
    max_metabolites_per_reaction: int = Field(4, ge=2)
    n_frames: int = Field(2880, ge=10)
    delta_t: float = Field(0.1, gt=0)
    start_frame: int = Field(0, ge=0)
    seed: int = 42
    concentration_min: float = Field(1.0, ge=0)
    concentration_max: float = Field(9.0, gt=0)
    cycle_fraction: float = Field(1.0, ge=0, le=1)
    cycle_length: int = Field(3, ge=2)
    use_mass_action: bool | None = Field(
        None, description="The predecessor's key: true is substrate_kinetics mass_action. Derived from "
                          "substrate_kinetics when absent; a value that contradicts it is an error.")
    substrate_kinetics: Literal["mass_action", "michaelis_menten"] = Field(
        "mass_action", description="Per substrate edge f(c) = c (mass action) or c·(1+K)/(K+c) (Michaelis–Menten "
                                   "with f(1) = 1), raised to |s|.")
    michaelis_K: float = Field(3.0, gt=0, allow_inf_nan=False,
                               description="K of the Michaelis–Menten law (substrate_kinetics michaelis_menten).")
    homeostasis_form: Literal["linear", "saturating"] = Field(
        "linear", description="h = −λ·(c − b) (linear) or −λ·w·tanh((c − b)/w) (saturating, slope λ at c = b).")
    homeostasis_width: float = Field(2.0, gt=0, allow_inf_nan=False,
                                     description="w of the saturating homeostasis (homeostasis_form saturating).")
    log_k_min: float = -2.0
    log_k_max: float = -1.0
    flux_limit: bool = False
    homeostatic_strength: float = 0.0
    homeostatic_lambda_per_type: list[float] = Field(default_factory=lambda: [0.001, 0.002])
    homeostatic_baseline_per_type: list[float] = Field(default_factory=lambda: [4.0, 6.0])
    baseline_mode: Literal["fixed"] = "fixed"
    baseline_concentration: float = 5.0
    circadian_amplitude: float = 0.0
    circadian_period: float = Field(1440.0, gt=0)
    noise_model_level: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="Process noise σ_p: after every Euler step and its clamp, "
                                                     "c ← max(c + N(0, σ_p²), 0).")
    external_input_type: Literal["none"] = "none"
    n_runs: int = Field(
        1, ge=1, description="Training trajectories, each from its own initial state (n_frames each, stacked; "
                             "no window crosses from one into the next). Run 1 is the single run's trajectory.")
    data_dir: str | None = Field(
        None, description="Directory of .npy files to train on instead of simulating (README: 'Your own data')."
    )
    derivative_window: int = Field(
        7, ge=3, description="With data_dir and no derivatives.npy: frames of the Savitzky–Golay fit that "
                             "estimates dc/dt (odd; wider smooths more noise and more of the dynamics).")
    derivative_polyorder: int = Field(3, ge=1, description="Degree of that fit's local polynomial (< the window).")

    @model_validator(mode="before")
    @classmethod
    def _kinetics_from_use_mass_action(cls, data: Any) -> Any:
        """use_mass_action and substrate_kinetics name one choice: the predecessor's key alone selects mass
        action (true) or is refused (false: its learned-MLP rate law is not simulated); both must agree."""
        if not isinstance(data, dict) or data.get("use_mass_action") is None:
            return data
        mass_action, kinetics = data["use_mass_action"], data.get("substrate_kinetics")
        if kinetics is None and mass_action is False:
            raise ValueError("use_mass_action false: the predecessor's learned rate law is not simulated; for "
                             "a non-mass-action law set substrate_kinetics: michaelis_menten")
        if kinetics is not None and isinstance(mass_action, bool) and mass_action != (kinetics == "mass_action"):
            raise ValueError(f"use_mass_action {str(mass_action).lower()} contradicts substrate_kinetics "
                             f"{kinetics}: drop use_mass_action (it follows substrate_kinetics)")
        return data

    @model_validator(mode="before")
    @classmethod
    def _random_sizes(cls, data: Any) -> Any:
        """A random network's sizes default to the predecessor's; a model sets its own."""
        if isinstance(data, dict) and data.get("network", "random") == "random":
            data = {key: value for key, value in data.items() if not (key in RANDOM_SIZES and value is None)}
            return RANDOM_SIZES | data
        return data

    @property
    def is_random(self) -> bool:
        return self.network == "random"

    @model_validator(mode="after")
    def _network(self) -> SimulationConfig:
        if self.is_random:
            for key, default in (("ignore_metabolites", []), ("metabolite_types", "generator")):
                if getattr(self, key) != default:
                    raise ValueError(f"{key} applies to model networks only (network is 'random')")
            return self
        if not self.network.endswith(MODEL_SUFFIXES) and self.network not in BUNDLED_MODELS:
            raise ValueError(f"network: unknown bundled model {self.network!r} (cobra bundles "
                             f"{', '.join(BUNDLED_MODELS)}; a file must end in {', '.join(MODEL_SUFFIXES)})")
        for key in RANDOM_SIZES:
            if getattr(self, key) is not None:
                raise ValueError(f"{key}: the model {self.network!r} sets the network's size; leave {key} out "
                                 f"(it sizes random networks only)")
        if self.data_dir is not None:
            raise ValueError(f"data_dir and network {self.network!r} both name the data: keep one")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> SimulationConfig:
        # one value after validation, so that a dumped config reloads as the same config
        self.__dict__["use_mass_action"] = self.substrate_kinetics == "mass_action"
        _require_value(self, "flux_limit", False, "flux limiting is not implemented")
        _require_value(self, "circadian_amplitude", 0.0, "circadian forcing is not implemented")
        _require_value(self, "homeostatic_strength", 0.0, "homeostasis is set per type by the *_per_type lists")
        if self.derivative_window % 2 == 0:
            raise ValueError(f"derivative_window must be odd, got {self.derivative_window}")
        if self.derivative_polyorder >= self.derivative_window:
            raise ValueError(f"derivative_polyorder must be < derivative_window ({self.derivative_window}), "
                             f"got {self.derivative_polyorder}")
        if self.concentration_min >= self.concentration_max:
            raise ValueError("concentration_min must be < concentration_max")
        if self.log_k_min >= self.log_k_max:
            raise ValueError("log_k_min must be < log_k_max")
        for key in ("homeostatic_lambda_per_type", "homeostatic_baseline_per_type"):
            if len(getattr(self, key)) != self.n_metabolite_types:
                raise ValueError(f"{key} needs one value per type ({self.n_metabolite_types})")
        if any(lam < 0 for lam in self.homeostatic_lambda_per_type):
            raise ValueError("homeostatic_lambda_per_type values must be >= 0")
        if not self.is_random:
            return self
        if self.n_metabolites < self.n_metabolite_types:
            raise ValueError("n_metabolites must be >= n_metabolite_types")
        if self.cycle_fraction > 0 and self.n_metabolites < self.cycle_length:
            raise ValueError("n_metabolites must be >= cycle_length")
        return self


class GraphModelConfig(_Section):
    """The learner's architecture (DESIGN.md §1)."""

    hidden_dim_sub: int = Field(64, ge=1)
    n_layers_sub: int = Field(4, ge=1)
    hidden_dim_node: int = Field(32, ge=1)
    n_layers_node: int = Field(2, ge=1)
    embedding_dim: int = Field(2, ge=1)
    output_size_sub: int = Field(1, ge=1, le=1)
    aggr_type: Literal["mul"] = "mul"
    rate_softplus: bool = Field(
        False, description="Reference mode: rate = k·softplus(product). Off by default (trainer.md §8.2 item 5)."
    )
    normalize_inputs: bool = Field(
        True, description="Feed c/xnorm (xnorm = 1.5·std of observed c) to the MLPs; the rate law keeps raw c."
    )
    substrate_form: Literal["mlp", "power", "mass_action"] = Field(
        "mlp", description="'mlp': MLP_sub(c, |s|) free. 'power': c^|s|·exp(g(c, |s|)) with g the MLP, so the "
                           "mass-action shape is built in and the MLP learns only a correction. 'mass_action': "
                           "c^|s| exactly, no MLP (the regression's form).")
    substrate_zero: bool = Field(
        False, description="With substrate_form 'mlp': MLP_sub(c, s) − MLP_sub(0, s), so that no substrate means no "
                           "rate (f(0, s) = 0 for every order), a prior that assumes no rate law.")
    substrate_orders: Literal["input", "repeated"] = Field(
        "input", description="With substrate_form 'mlp': 'input' learns one law per order, MLP_sub(c, |s|); "
                             "'repeated' counts an order-s edge as s molecules of its substrate acting alike, "
                             "f(c, s) = MLP_sub(c, 1)^s (a prior: mass action and Michaelis–Menten both hold it).")
    substrate_grid: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="Training evaluates MLP_sub at this many points per order (a third at the quantiles of "
                            "the data's concentrations, a third evenly over their range, a third evenly in log c) and "
                            "interpolates it linearly in c to the batch, instead of at every (frame, pair): the same "
                            "law to interpolation error at a fraction of the cost on large networks. An order with "
                            "too few pairs stays exact. 0: at every (frame, pair). 'auto': 512 for each order with "
                            "at least 1 000 pairs and 4× as many (frame, pair) values in a batch (iJO1366's order 1; "
                            "no order of a mission-sized network, whatever its batch or window), else exact. "
                            "Metrics and plots always evaluate MLP_sub itself.")
    homeostasis_head: Literal["mlp", "linear"] = Field(
        "mlp", description="'mlp': h_i = MLP_node(c_i, a_i). 'linear': h_i = -λ(a_i)·(c_i - b(a_i)) with "
                           "log λ and b affine in the embedding (DESIGN.md §1).")


DEFAULT_CONSERVATION_FRAMES = 64
# A number of frames or types, or "auto": chosen from the data (noise_estimate, or BIC for types).
CountOrAuto = Annotated[int, Field(ge=1)] | Literal["auto"]


class TrainingConfig(_Section):
    """Optimisation, regularisers and budget (DESIGN.md §3)."""

    learning_rate_start: float = Field(1e-3, gt=0)
    learning_rate_k: float | None = Field(None, gt=0)
    learning_rate_embedding: float | None = Field(None, gt=0)
    learning_rate_node: float | None = Field(None, gt=0)
    learning_rate_sub: float | None = Field(None, gt=0)
    batch_size: int = Field(8, ge=1)
    n_epochs: int = Field(1, ge=1)
    data_augmentation_loop: float = Field(1000, gt=0)
    seed: int = 42
    coeff_MLP_sub_diff: float = Field(100.0, ge=0)
    coeff_MLP_node_L1: float = Field(0.0, ge=0)
    coeff_MLP_sub_norm: float = Field(0.0, ge=0)
    coeff_k_floor: float = Field(0.0, ge=0)
    k_floor_threshold: float = -2.0
    recurrent_training: bool = False
    time_step: int = Field(1, ge=1, le=64)
    freeze_stoichiometry: bool = True
    learning_rate_S_start: float = Field(0.0, ge=0)
    coeff_S_L1: float = Field(0.0, ge=0)
    coeff_S_integer: float = Field(0.0, ge=0)
    coeff_mass_conservation: float = Field(0.0, ge=0)
    measurement_noise_level: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="Measurement noise σ_m (concentration units): every observed c "
                                                     "gets N(0, σ_m²), clamped at 0; dc/dt becomes forward "
                                                     "differences (simulate.add_measurement_noise).")
    # Our additions; each is documented in docs/config.md.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    coeff_conservation: float = Field(0.0, ge=0)
    conservation_frames: Annotated[int, Field(ge=1)] | Literal["all"] = Field(
        DEFAULT_CONSERVATION_FRAMES,
        description="Frames per step for the conservation loss, or 'all' (exact moments with the linear head; the "
                    "MLP head has none and samples the default).")
    detach_homeostasis: bool = Field(
        False, description="The prediction loss sees the homeostasis as a constant: the head and the embeddings "
                           "learn from the conservation loss only.")
    attach_homeostasis_fraction: float = Field(
        1.0, ge=0, le=1, description="With detach_homeostasis: the fraction of iterations after which the "
                                     "prediction loss trains the head too (1: never).")
    coeff_residual_fit: float = Field(
        0.0, ge=0, description="Weight of the head's fit to every metabolite's residual dc/dt − "
                               "reactions over all frames, the reactions frozen at the last refresh.")
    residual_fit_start: float = Field(
        0.5, ge=0, lt=1, description="Fraction of the run after which coeff_residual_fit applies: the "
                                     "reaction fit must be near exact first, or the head learns its misfit.")
    residual_refresh_every: int = Field(500, ge=1, description="Iterations between residual refreshes.")
    residual_fit_frames: int = Field(
        16, ge=1, description="MLP head: frames of the residual its fit (and the neighbour fusion) samples per step; "
                              "the linear head fits every frame exactly through moments.")
    coeff_MLP_node_restoring: float = Field(
        0.0, ge=0, description="Penalty ||relu(h(c_{g+1}, a_i) − h(c_g, a_i))|| over a grid of c from 0 to 1.1 × the "
                               "largest observed c, for every metabolite: the prior that homeostasis restores "
                               "(h does not increase in c) without a form (MLP head; the linear head has it built in).")
    moment_window: CountOrAuto = Field(
        1, description="Frames averaged (sliding box) before the conservation and residual-fit moments and "
                             "the head's start: the weak form of both fits. The mean of forward differences "
                             "telescopes to (c[t+W] − c[t]) / (W·dt), so measurement noise in dc/dt shrinks W-fold "
                             "and stops correlating with c; both fits stay exact since the head is linear in c "
                             "(1: every frame on its own; 'auto': chosen from the measurement noise read from the "
                             "data, metabo_tune.noise_estimate).")
    prediction_window: CountOrAuto = Field(
        1, description="The prediction loss in weak form: each batch entry is a window of W frames from t, and the "
                       "model's rates averaged over them are fitted to (c[t+W] − c[t]) / (W·dt), exact for Euler "
                       "steps. The target's noise shrinks W-fold and its correlation with the inputs' noise W²-fold; "
                       "an iteration costs about W× (1: the data's own dc/dt; 'auto': 1 or 10 from the measurement "
                       "noise read from the data, metabo_tune.noise_estimate; always 1 with "
                       "recurrent_training, whose rollout is its own multi-frame loss).")
    moment_window_shape: Literal["box", "trapezoid"] = Field(
        "box", description="How the weak form averages c against the window's W rates: `box` over the same W "
                           "frames (exact for exact derivatives), `trapezoid` over the W + 1 frames that bound "
                           "their forward differences with half-weight ends, which cancels the noise bias of "
                           "forward differences at any W (W = 1: the midpoint of each step).")
    residual_fit_learning_rate: float = Field(
        0.0, ge=0, description="With the residual fit: the head's and the embeddings' learning rate restarts at "
                               "this value when the fit starts and follows lr_schedule over the rest of the run "
                               "(0: their rates go on as before).")
    coeff_embedding_fusion: float = Field(
        0.0, ge=0, description="Sum-of-norms penalty Σ_{i<j} ||a_i - a_j||: pulls embeddings into groups.")
    coeff_residual_fusion: float = Field(
        0.0, ge=0, description="With the residual fit, during its phase: Σ_i Σ_(j ∈ N(i)) ||a_i - a_j||, each "
                               "embedding pulled towards the k metabolites whose (λ, b) fit its own residual best, "
                               "so that metabolites whose residual fixes only λ·(b − mean c) join their group.")
    residual_fusion_neighbours: int = Field(
        10, ge=1, description="k of coeff_residual_fusion's neighbours, found anew every iteration with "
                              "the linear head, at every residual refresh with the MLP head.")
    type_grouping_at: float | None = Field(
        None, ge=0, lt=1, description="Fraction of the run at which every embedding is replaced by the centre of the "
                                      "group whose head fits its residual best (metabo_tune.type_groups), after "
                                      "which the embeddings stay fixed and the head learns one function per group "
                                      "from its members pooled; needs the residual fit and its phase begun (null: "
                                      "never).")
    n_types: CountOrAuto = Field(
        "auto", description="Groups of type_grouping_at: a number (k-means starts, kept as given), or 'auto' (the "
                            "embeddings' density clusters, merged while two groups fit each other's residuals "
                            "within type_merge_tolerance).")
    type_merge_tolerance: float = Field(
        0.25, gt=0, allow_inf_nan=False,
        description="n_types 'auto': two groups merge when each one's residuals are fitted by the other's centre at "
                    "most this much (relative) worse than by its own.")
    zero_margin: Annotated[float, Field(ge=0, allow_inf_nan=False)] | Literal["auto"] | None = Field(
        None, description="A metabolite's entries whose window comes within this margin of zero concentration are "
                          "left out of the prediction loss (frames t … t+W of a prediction window) and of the "
                          "residual's moments and cross fit (each moment window's frames), as "
                          "regression.zero_margin leaves them out of the regression: the simulator clamps c at "
                          "zero and measurements are clipped there, so no rate law fits them. 'auto': 3 × the "
                          "measurement noise read from the data. With recurrent_training the rolled-out "
                          "prediction loss keeps every entry. null: every entry kept.")
    decensor_zeros: bool | Literal["auto"] = Field(
        False, description="Measurements clamped at zero (max(c + ε, 0), as the simulator measures) are biased "
                           "upward near zero, and a substrate near zero carries that bias into the rows of every "
                           "metabolite its reactions touch. true: each entry with a zero within one frame is "
                           "replaced by the local censored (Tobit) estimate of c at the noise read from the data "
                           "(metabo_tune/censoring.py); 'auto': so where the data hold zeros. The derivatives are "
                           "left as given. analysis.log: decensored_entries.")
    group_solve_moves: int | None = Field(
        None, ge=0, description="At the end of the run (after type_grouping_at): with the learned "
                                "rate law held, k and each group's homeostasis (piecewise linear in c with the MLP "
                                "head, linear in c with the linear head) in one "
                                "least-squares solve, then up to this many moves of single metabolites to the group "
                                "that lowers the solved misfit most, two groups merged where the merge raises it "
                                "at most 1.25-fold, and a group split in two where that lowers it more than twofold "
                                "(on noisy data in the weak form, misfits above their noise floor); the head is "
                                "fitted to the solved functions (metabo_tune.group_solve). "
                                "null: off.")
    group_solve_smooth: bool = Field(
        False, description="With group_solve_moves and the MLP head (ignored with the linear head, whose h is linear): "
                           "each group's h in the solve a cubic spline on its knots instead of piecewise linear. A "
                           "law's interpolation error passes into k and into the misfit that moves metabolites "
                           "between groups (docs/results.md, \"Real networks\").")
    group_solve_pairs: bool = Field(
        False, description="With group_solve_moves: where no single move lowers the misfit, two metabolites moved at "
                           "once (the pairs among the 8 single moves that raise it least): metabolites coupled through "
                           "shared reactions can each fit worse alone in their right group (metabo_tune.group_solve).")
    group_solve_takes_groups: bool = Field(
        False, description="With group_solve_moves: where the solve is not applied (its k lowers the misfit less than "
                           "twofold), still take its groups, each group's homeostasis solved with the run's k held. "
                           "A move or split happens only where the data's misfit falls, so the groups are the "
                           "data's verdict whatever the verdict on k; a merge may raise the misfit (up to 1.25-fold), "
                           "so merged groups are taken only where at the run's k they fit better than the run's own, "
                           "else the groups the solve's moves alone gave. false: such a run stays as it is.")
    free_group_solve: bool = Field(
        False, description="With group_solve_moves: after the group solve, the form-free fit "
                           "(metabo_tune.free_regress) with the run's groups sharing one h each (96 breakpoints, half "
                           "at quantiles, half evenly spaced): the "
                           "rate law's shape searched too, not held at MLP_sub, the groups refined first with its f "
                           "held. Applied where its misfit is below the group solve's: then k, MLP_sub, the groups and "
                           "each group's MLP_node take its k, f, groups and h. Both "
                           "misfits are RMS of dc/dt over the entries kept; on noisy data they are read on different "
                           "windows (regression.window and group_solve_window), so the comparison is measured on "
                           "exact data only.")
    group_solve_mixture: bool = Field(
        False, description="With group_solve_moves and the linear head (ignored otherwise, as a search may switch "
                           "either off): where the solve ends with one group, each "
                           "metabolite's own relaxation (λ, μ) is fitted to its residual at that one-group solution's "
                           "k and the groups "
                           "are seeded from the regression's mixture of shared relaxations over those estimates "
                           "(n_types, or with 'auto' one or two by BIC), then refined by moves. Noise compresses "
                           "the misfit ratio a split must earn (σ_m 0.05: the true types lower it 7 %); the mixture "
                           "weighs each estimate by its own covariance instead. false: one group stays one.")
    group_solve_window: int = Field(
        100, ge=2, description="With prediction_window > 1 (noisy data): the frames each row of the group solve's "
                               "weak form averages, (c[t+W] − c[t]) / (W·dt) at every start t. Its noise falls as 1/W "
                               "and its cost does not grow with W, so it is longer than the training's window.")
    sub_norm_concentration: float = Field(1.0, gt=0)
    sub_norm_target: Literal["concentration", "gauge"] = Field(
        "concentration", description="What coeff_MLP_sub_norm pins: 'concentration' |MLP_sub(c*, 1)| = c* "
                                     "(c* = sub_norm_concentration, a mass-action target); 'gauge' |MLP_sub(1, s)| = 1 "
                                     "for every order s present, the one gauge of the scale k and f trade, which "
                                     "assumes no form (mass action and normalised Michaelis–Menten both have it).")
    init: Literal["random", "regression", "free_regression"] = Field(
        "random", description="'regression': log k starts at the known-form regression's fit (metabo_tune.regress) "
                              "where it is determined and positive, and the linear head at its one-type (λ, b); the "
                              "regression assumes mass action and linear relaxation. 'free_regression': log k and "
                              "MLP_sub start at the form-free fit's k and f (metabo_tune.free_regress), which assumes "
                              "no form, only the free-form priors and repeated orders. Embeddings are never seeded.")
    log_k_init_min: float = -2.0
    log_k_init_max: float = 1.0
    checkpoint_every: int = Field(0, ge=0)
    progress_every: int = Field(0, ge=0)
    n_threads: int = Field(1, ge=1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        _require_value(self, "freeze_stoichiometry", True, "S is given and frozen; learning S is not supported")
        for key in ("learning_rate_S_start", "coeff_S_L1", "coeff_S_integer", "coeff_mass_conservation"):
            _require_value(self, key, 0.0, "S is frozen, so S terms must stay 0")
        if self.recurrent_training and self.prediction_window not in (1, "auto"):
            raise ValueError("prediction_window must be 1 with recurrent_training (the rollout is its own "
                             "multi-frame loss)")
        if self.type_grouping_at is not None and (self.coeff_residual_fit == 0
                                                  or self.type_grouping_at < self.residual_fit_start):
            raise ValueError(f"type_grouping_at {self.type_grouping_at:g} needs coeff_residual_fit > 0 and "
                             f"residual_fit_start <= type_grouping_at (got {self.coeff_residual_fit:g} and "
                             f"{self.residual_fit_start:g}): the groups are chosen by the head's fit to the residual")
        if self.group_solve_moves is not None and self.type_grouping_at is None:
            raise ValueError(f"group_solve_moves {self.group_solve_moves} needs type_grouping_at: the solve fits one "
                             f"homeostasis per type group")
        if self.log_k_init_min >= self.log_k_init_max:
            raise ValueError("log_k_init_min must be < log_k_init_max")
        if self.detach_homeostasis and self.coeff_conservation == 0:
            # A warning, not an error: a search may step coeff_conservation to 0 on a detached node.
            warnings.warn("training.detach_homeostasis without coeff_conservation > 0: the homeostasis "
                          "head gets no gradient and stays at its start", stacklevel=2)
        return self

    def learning_rate(self, group: Literal["k", "embedding", "node", "sub"]) -> float:
        """The reference's fallbacks: a missing group rate falls back to learning_rate_start, except
        the embedding rate, which falls back to the node rate."""
        value = getattr(self, f"learning_rate_{group}")
        if value is not None:
            return value
        if group == "embedding":
            return self.learning_rate("node")
        return self.learning_rate_start

    def iterations_per_epoch(self, n_frames: int) -> int:
        """The reference's rule: int(n_frames · aug // batch_size · 0.2)."""
        return max(1, int((n_frames * self.data_augmentation_loop // self.batch_size) * 0.2))


class RegressionConfig(_Section):
    """The known-form least-squares fit (metabo_tune.regress): the weak form's window and the types' mixture."""

    window: CountOrAuto = Field(
        "auto", description="Frames per weak-form window (1: the strong form on the data's dc/dt); 'auto' chooses "
                            "from the measurement noise read from the data: 1 where it is negligible, else the "
                            "shortest of 10, 20, 40, … frames over which most metabolites move 6× the noise's "
                            "spread, at most an eighth of the shortest run. Also the form-free fit's window.")
    n_types: CountOrAuto = Field(
        "auto", description="Metabolite types of the mixture of shared relaxations; 'auto' chooses by BIC.")
    max_types: int = Field(4, ge=1, description="The largest number of types 'auto' tries.")
    zero_margin: Annotated[float, Field(ge=0, allow_inf_nan=False)] | Literal["auto"] | None = Field(
        "auto", description="A metabolite's rows whose window (frames t … t+W) comes within this margin of zero "
                            "concentration are left out of the fit: the simulator clamps c at zero, which breaks the "
                            "ODE there, and measurements clipped at zero are biased within a few σ of it. 'auto': "
                            "3 × the measurement noise read from the data (on exact data, windows that touch zero). "
                            "null: every row kept.")
    decensor_zeros: bool | Literal["auto"] = Field(
        False, description="As training.decensor_zeros, for the regression's data.")
    row_weights: Literal["noise", "none"] = Field(
        "noise", description="'noise': given k, each metabolite's relaxation is fitted with its rows weighted by the "
                             "inverse of the variance the measurement noise read from the data gives them (rows "
                             "whose reactions run fast carry far more), and the types' mixture reads those; "
                             "'none': every kept row alike.")


class Config(_Section):
    description: str = ""
    dataset: str = ""
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    graph_model: GraphModelConfig = Field(default_factory=GraphModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    regression: RegressionConfig = Field(default_factory=RegressionConfig)

    @model_validator(mode="after")
    def _head_options(self) -> Config:
        if self.simulation.data_dir is not None and self.training.measurement_noise_level > 0:
            raise ValueError(f"training.measurement_noise_level must be 0 with simulation.data_dir (got "
                             f"{self.training.measurement_noise_level:g}): your data already carry their noise, "
                             f"which analysis.log reports as measurement_noise_estimate")
        if self.training.coeff_conservation > 0 and self.training.conservation_frames == "all" \
                and self.graph_model.homeostasis_head != "linear":
            warnings.warn(f"training.conservation_frames 'all' is the linear head's exact moment form; the MLP head "
                          f"samples {DEFAULT_CONSERVATION_FRAMES} frames per step instead", stacklevel=2)
        if self.training.coeff_residual_fusion > 0 and self.training.coeff_residual_fit == 0:
            warnings.warn("training.coeff_residual_fusion acts during the residual fit only; with "
                          "coeff_residual_fit 0 it is ignored", stacklevel=2)
        return self

    def total_iterations(self) -> int:
        """A training's iterations: the reference counts them from the configured n_frames (per run), not the
        frames saved."""
        return self.training.n_epochs * self.training.iterations_per_epoch(self.simulation.n_frames)

    def sampled_conservation_frames(self) -> int | None:
        """Frames per step of the sampled conservation loss; None where there is none (the loss off, or the
        linear head's exact moments over every frame). With the MLP head, 'all' samples the default count:
        every frame each step (2 880 on the mission network) made an iteration 60× slower, a screen 21 min
        instead of 1, a trap a search steps into by switching the head of a node that uses 'all'."""
        frames = self.training.conservation_frames
        if self.training.coeff_conservation == 0 or (frames == "all" and self.graph_model.homeostasis_head == "linear"):
            return None
        return DEFAULT_CONSERVATION_FRAMES if frames == "all" else frames

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A config dict written by an earlier version, completed with the defaults of the keys added since,
    so that a checkpoint or a finished run stays the same config when a new key keeps its old behaviour."""
    completed = {}
    for key, default in Config().to_dict().items():
        completed[key] = default | stored.get(key, {}) if isinstance(default, dict) else stored.get(key, default)
    return completed | {key: value for key, value in stored.items() if key not in completed}


def same_config(path: str | Path, cfg: Config) -> bool:
    """Whether the config.yaml at `path` (written by this or an earlier version) is `cfg`."""
    try:
        return with_defaults(yaml.safe_load(Path(path).read_text()) or {}) == cfg.to_dict()
    except (yaml.YAMLError, AttributeError, TypeError):
        return False


def _require_value(section: BaseModel, key: str, required: object, reason: str) -> None:
    if getattr(section, key) != required:
        raise ValueError(f"{key} must be {required!r} ({reason}), got {getattr(section, key)!r}")


# Sections and keys the predecessor's YAML files carry that have no effect on a run. They are
# accepted so those files load, and a warning says they are ignored.
IGNORED_SECTIONS = {"plotting", "claude", "config_file", "data_folder_name", "connectivity_file"}
IGNORED_KEYS = {
    "training": {
        "homeostasis_training", "homeostasis_time_step", "learning_rate_node_homeostasis",
        "learning_rate_embedding_homeostasis", "skip_phase1", "learning_rate_embedding_start",
        "n_epochs_init", "first_coeff_L1", "noise_recurrent_level", "training_single_type",
        "cluster_distance_threshold", "variance_weighted_sampling",
    },
    "graph_model": {"particle_model_name", "signal_model_name", "prediction", "input_size", "output_size"},
    "simulation": {"connectivity_type", "params", "model_name"},
}

_SECTIONS = {"simulation": SimulationConfig, "graph_model": GraphModelConfig, "training": TrainingConfig,
             "regression": RegressionConfig}


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a nested dict; raise ConfigError with a one-line message naming source and key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    cleaned: dict[str, Any] = {}
    for key, value in raw.items():
        if key in IGNORED_SECTIONS:
            warnings.warn(f"{source}: section '{key}' is not used by metabo_tune and is ignored", stacklevel=2)
            continue
        if key in _SECTIONS:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{key}' must be a mapping of keys, got {type(value).__name__}")
            section = {}
            for sub_key, sub_value in value.items():
                if sub_key in IGNORED_KEYS.get(key, ()):
                    warnings.warn(f"{source}: '{key}.{sub_key}' has no effect here and is ignored", stacklevel=2)
                else:
                    section[sub_key] = sub_value
            cleaned[key] = section
        else:
            cleaned[key] = value
    try:
        return Config.model_validate(cleaned)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    errors = exc.errors()
    err = errors[0]
    loc = _field_path(err["loc"])
    where = ".".join(loc) or "<top level>"
    alternatives = [other for other in errors if _field_path(other["loc"]) == loc]
    if len(alternatives) > 1:  # a key that takes a number or a word: say both
        expected = " or ".join(_expected(other) for other in alternatives)
        return f"{where}: expected {expected} (got {err['input']!r})"
    if err["type"] == "extra_forbidden":
        model: type[BaseModel] = Config if len(loc) == 1 else _SECTIONS.get(loc[0], Config)
        allowed = sorted(model.model_fields)
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
        return f"unknown key '{where}' ({hint})"
    message = err["msg"].removeprefix("Value error, ")
    if not loc:  # a rule across sections names its keys itself
        return message
    if err["type"] == "value_error" or "input" not in err:
        return f"{where}: {message}"
    return f"{where}: {message} (got {err['input']!r})"


def _expected(error: dict) -> str:
    """What one branch of a union accepts, in a few words."""
    context = error.get("ctx", {})
    if error["type"] in ("int_parsing", "int_type", "int_from_float"):
        return "an integer"
    if error["type"] == "greater_than_equal":
        return f"an integer >= {context['ge']}"
    if error["type"] == "literal_error":
        return context["expected"]
    return error["msg"].removeprefix("Input should be ")


def _field_path(location: tuple) -> list[str]:
    """The section and key of an error's location, without the tags pydantic adds inside a union
    ('constrained-int', "literal['auto']")."""
    return [str(part) for part in location if not (isinstance(part, str) and ("[" in part or "-" in part))]


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is refused: PyYAML keeps the last
    value without a word, and a config that names a key twice holds a typo either way."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be given again on purpose
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise _DuplicateKey(problem=f"'{key}' is given twice", problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc.problem} (line {exc.problem_mark.line + 1}); keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    return raw if raw is not None else {}


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str = "--set") -> dict[str, Any]:
    """Apply `section.key=value` strings; values are parsed as YAML scalars (5e-4, true, [1, 2])."""
    result = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
    for section in _SECTIONS:
        if section in result and result[section] is None:
            result[section] = {}
    given: dict[tuple[str, str], str] = {}
    for item in overrides:
        dotted, sep, text = item.partition("=")
        parts = dotted.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"{source} '{item}': expected section.key=value, e.g. training.learning_rate_node=5e-4")
        section, key = parts
        if (section, key) in given:
            raise ConfigError(f"{source} {section}.{key} is given twice ('{given[section, key]}', then '{item}'); "
                              "keep one")
        given[section, key] = item
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{source} '{item}': value is not valid YAML") from None
        value = _number_or_text(value)
        target = result.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{source} '{item}': '{section}' is not a section")
        target[key] = value
    return result


_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _number_or_text(value: Any) -> Any:
    """YAML 1.1 reads 5e-4 (no dot) as text; on the command line it is meant as a number."""
    return float(value) if isinstance(value, str) and _SCIENTIFIC.match(value) else value


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a run config, or the `base` config of a search-space file, with `--set` overrides."""
    raw = read_yaml(path)
    if isinstance(raw, dict) and "base" in raw:
        raw = raw["base"] or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (simulation, graph_model, training), "
                          f"got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    source = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)  # where the bad value may be
    return config_from_dict(raw, source=source)
