"""Run the real training step on this machine's GPU (or CPU) and measure its memory and speed.

One ``ProfileJob`` is one scenario. The model is built by the tracer's builder (``recipe.build_skeleton`` then
``recipe.materialize`` with real random tensors, 4-bit weights quantized on the device, or the weights of a
real checkpoint), the scenario's optimizer is made by ``recipe.make_optimizer``, and the step is the tracer's
step: forward under autocast with ``labels`` (transformers computes the loss), backward,
``optimizer.step()``, ``zero_grad(set_to_none=True)``, on a fresh batch of ``seq x batch`` random token ids.

Order of a run on CUDA:

1. NVML "used" before torch touches the GPU (other processes and the driver's own share: the baseline);
2. CUDA initialised, one tiny tensor made: NVML used minus the baseline minus torch's reserved bytes is the
   CUDA context (``meas_context_bytes``);
3. the model and optimizer are built (phase ``load``), ``warmup`` steps run (the optimizer state is created,
   kernels load, the allocator settles); torch's allocated bytes then are ``meas_loaded_bytes``;
4. torch's peak counters are reset and ``steps`` timed steps run (``torch.cuda.synchronize`` around each)
   while a background thread samples NVML; ``meas_peak_allocated_bytes`` / ``meas_peak_reserved_bytes`` are
   torch's maxima over those steps and ``meas_peak_bytes`` is NVML's peak minus the baseline: device memory
   of this process, CUDA context and paged (managed) optimizer state included, as the planner's
   ``peak_bytes`` counts it; ``step_time_s`` is the median step and ``tokens_per_s`` follows from it;
5. with ``components``, one more step (not timed) runs under the tracer's ``LiveTracker`` on the real tensors:
   per-component bytes at the tensor-level peak and the phase of that peak.

On CPU nothing is paged and there are no allocator or NVML figures (those columns stay empty); the tracked
step gives the tensor-level bytes exactly as ``trace --real`` counts them (the tracer's CPU patches emulate
CUDA's autocast and dropout kernels), and steps are timed the same way.

An out-of-memory error in any phase is a result: the job returns status ``oom`` with the phase it happened
in and the free device memory at that moment; the caller frees everything and goes on.

Known Limitations: weights are random unless a checkpoint folder is given (memory and speed do not depend on
the values); one process, one GPU; NVML's figure covers the whole device, so other processes that change
their memory during a run change the peak.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
import warnings
from dataclasses import dataclass, field

from vramplan.errors import ConfigError, MissingDependencyError, ScenarioError, VramplanError

from .nvml import DEFAULT_HZ
from .recipe import build_skeleton, make_optimizer, materialize, require, torch_dtype
from .tracker import COMPONENTS, make_tracker

DEVICES = ("cuda", "cpu")
BNB_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit", "adamw_32bit", "paged_adamw_32bit")


class NoGpuError(VramplanError):
    """No CUDA GPU where the profile was asked to run on one."""


class CheckpointError(ConfigError):
    """A checkpoint folder whose weights do not match its config.json, or that cannot be read."""


@dataclass
class ProfileJob:
    """Everything one measurement needs (picklable: it is sent to a fresh process on CUDA).

    ``config`` is the model's config.json as a dict; ``checkpoint`` a folder of ``*.safetensors`` weights that
    replace the random ones; ``components`` adds the untimed tracked step (per-component bytes).
    """

    scenario: object
    config: dict
    device: str = "cuda"
    gpu_index: int = 0
    warmup: int = 2
    steps: int = 5
    nvml: bool = True
    sample_hz: float = DEFAULT_HZ
    components: bool = True
    checkpoint: str | None = None
    seed: int = 0

    def validate(self) -> None:
        """Raise ScenarioError for settings no run could use."""
        if self.device not in DEVICES:
            raise ScenarioError(f"--device {self.device!r}: use cuda or cpu")
        if self.scenario.workload.gpus != 1:
            raise ScenarioError("profile runs one process on one GPU; leave out --gpus (memory per GPU differs "
                                "with sharding)")
        if not 1 <= self.warmup <= 100:
            raise ScenarioError(f"--warmup {self.warmup}: use 1 to 100 warm-up steps (the first step creates the "
                                f"optimizer state), e.g. --warmup 2")
        if not 1 <= self.steps <= 10_000:
            raise ScenarioError(f"--steps {self.steps}: use 1 to 10000 measured steps, e.g. --steps 10")
        if self.gpu_index < 0:
            raise ScenarioError(f"--gpu-index {self.gpu_index}: use 0 for the first GPU")


@dataclass
class ProfileResult:
    """What one job measured: ``measured`` holds the records' ``meas_*`` / timing columns; ``info`` the rest."""

    status: str  # "ok" | "oom" | "error"
    measured: dict = field(default_factory=dict)
    error: str = ""
    phase: str = ""  # where an out-of-memory error happened
    info: dict = field(default_factory=dict)
    fatal: bool = False  # the machine cannot run any job (no GPU, library missing): stop, do not record


def _is_fatal(exc: BaseException) -> bool:
    from .nvml import NvmlUnavailableError

    return isinstance(exc, (MissingDependencyError, NoGpuError, NvmlUnavailableError))


# ------------------------------------------------------------------------------------------------------
# checks with one-line answers


def needs_bitsandbytes(recipe) -> bool:
    return recipe.quantized or recipe.optimizer in BNB_OPTIMIZERS


def check_cuda(gpu_index: int = 0) -> None:
    """Raise NoGpuError unless torch sees a CUDA GPU with this index."""
    torch = require("torch")
    if not torch.cuda.is_available():
        build = f"a CPU-only build of torch {torch.__version__}" if not torch.version.cuda else \
            f"torch {torch.__version__} (CUDA {torch.version.cuda})"
        raise NoGpuError(f"no CUDA GPU is visible to {build}")
    n = torch.cuda.device_count()
    if gpu_index >= n:
        raise NoGpuError(f"--gpu-index {gpu_index}: torch sees {n} GPU(s); use 0 to {n - 1}")


def check_bitsandbytes_cuda() -> None:
    """Raise MissingDependencyError unless bitsandbytes is installed with its CUDA library loaded."""
    bnb = require("bitsandbytes")
    ce = require("bitsandbytes.cextension")
    lib_ok = isinstance(getattr(ce, "lib", None), getattr(ce, "CudaBNBNativeLibrary", ()))
    if not lib_ok:
        raise MissingDependencyError(
            f"bitsandbytes {bnb.__version__} has no CUDA library loaded here (backend {getattr(ce, 'BNB_BACKEND', '?')}): "
            f"install a CUDA build (pip install 'bitsandbytes==0.50.2'), or profile without it: "
            f"--method lora --optimizer adamw")


def nvml_target(gpu_index: int) -> tuple[int, str | None]:
    """(NVML index, UUID or None) of torch's ``cuda:gpu_index``, read from CUDA_VISIBLE_DEVICES without
    initialising CUDA (so the baseline is taken before the context exists)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return gpu_index, None
    items = [v.strip() for v in visible.split(",") if v.strip()]
    if gpu_index >= len(items):
        raise NoGpuError(f"--gpu-index {gpu_index}: CUDA_VISIBLE_DEVICES={visible} shows {len(items)} GPU(s)")
    item = items[gpu_index]
    if item.isdigit():
        return int(item), None
    return 0, item


def open_nvml(gpu_index: int, nvml=None):
    from .nvml import NvmlDevice

    index, uuid = nvml_target(gpu_index)
    return NvmlDevice.open(index, uuid=uuid, nvml=nvml)


# ------------------------------------------------------------------------------------------------------
# provenance and the GPU the planner predicts for


def library_env() -> dict:
    from .environment import library_versions

    return library_versions()


def profile_env(device: str, gpu_index: int = 0, *, nvml_device=None) -> dict:
    """Provenance of a profile row (records.PROVENANCE), read without creating a CUDA context when NVML is there."""
    import datetime
    import platform

    torch = require("torch")
    env = {"source": "profile", "device": "cpu", "gpu_memory_bytes": None, "driver": "", "cuda": "",
           **library_env(), "date": datetime.date.today().isoformat()}
    if device == "cpu":
        env["device"] = f"cpu ({platform.machine() or 'unknown'})"
        return env
    env["cuda"] = str(torch.version.cuda or "")
    if nvml_device is not None:
        env.update(device=nvml_device.name, gpu_memory_bytes=nvml_device.total_bytes, driver=nvml_device.driver)
    else:
        props = torch.cuda.get_device_properties(gpu_index)
        env.update(device=props.name, gpu_memory_bytes=int(props.total_memory))
    return env


def device_gpu_spec(env: dict, *, nvml_device=None, gpu_index: int = 0):
    """The GpuSpec the planner predicts for: the catalogue card of this name, else one built from the device."""
    from vramplan.errors import UnknownGpuError
    from vramplan.gpus import resolve_gpu
    from vramplan.spec import GpuSpec

    if env["source"] != "profile" or env["device"].startswith("cpu"):
        return None
    try:
        spec = resolve_gpu(env["device"])
        if spec.memory_bytes:
            return spec
    except UnknownGpuError:
        pass
    cc = None
    if nvml_device is not None:
        try:
            major, minor = nvml_device.nvml.nvmlDeviceGetCudaComputeCapability(nvml_device.handle)
            cc = f"{major}.{minor}"
        except Exception:  # an old driver without the call: the planner then assumes pre-Hopper workspaces
            cc = None
    else:
        torch = require("torch")
        major, minor = torch.cuda.get_device_capability(gpu_index)
        cc = f"{major}.{minor}"
    return GpuSpec(id="this-gpu", name=env["device"], memory_bytes=int(env["gpu_memory_bytes"] or 0),
                   compute_capability=cc)


# ------------------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_files(folder) -> list:
    """The ``*.safetensors`` files of a model folder ([] when it holds only a config.json)."""
    from pathlib import Path

    p = Path(folder)
    files = sorted(p.glob("*.safetensors"))
    if not files and (sorted(p.glob("*.bin")) or sorted(p.glob("*.pt"))):
        raise CheckpointError(f"{folder}: only safetensors checkpoints are read; convert the .bin weights "
                              f"(save_pretrained(..., safe_serialization=True)) or profile its config.json alone")
    return files


def _checkpoint_name(module_name: str, param: str, peft_wrapped: bool) -> str:
    name = f"{module_name}.{param}" if module_name else param
    if peft_wrapped and name.startswith("base_model.model."):
        name = name[len("base_model.model."):]
    return name.replace(".base_layer.", ".")


def _expected_weights(model, recipe) -> dict:
    """checkpoint key -> (module, param name, dense shape) for every base-model parameter (LoRA excluded)."""
    out = {}
    seen = set()
    for mod_name, module in model.named_modules():
        for pname, p in module._parameters.items():
            if p is None or id(p) in seen or ".lora_" in f".{mod_name}." or "lora_" in pname:
                continue
            seen.add(id(p))
            out[_checkpoint_name(mod_name, pname, recipe.trains_adapters)] = (module, pname, tuple(p.shape))
    return out


def check_checkpoint(files, model, recipe, folder) -> dict:
    """key -> file for every expected weight; raise CheckpointError when the weights do not match the config."""
    require("safetensors")  # ships with transformers; named if it is missing
    from safetensors import safe_open

    expected = _expected_weights(model, recipe)
    where, shapes = {}, {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for k in fh.keys():
                    where[k] = f
                    shapes[k] = tuple(fh.get_slice(k).get_shape())
        except Exception as exc:  # safetensors raises its own error types for a broken file
            raise CheckpointError(f"{f}: not a readable safetensors file ({exc})") from None
    if any(k.endswith((".absmax", ".quant_map", ".nested_absmax")) or "quant_state" in k for k in shapes):
        raise CheckpointError(f"{folder}: a pre-quantized 4-bit checkpoint; profile the 16-bit checkpoint (QLoRA "
                              f"quantizes it on the GPU) or its config.json alone")
    missing = [k for k in expected if k not in shapes]
    tied = getattr(model.config, "tie_word_embeddings", False)
    missing = [k for k in missing if not (tied and k.endswith("lm_head.weight"))]
    if missing:
        raise CheckpointError(f"{folder}: the checkpoint does not match its config.json: {len(missing)} weight(s) "
                              f"of the model it describes are missing, e.g. {missing[0]}")
    wrong = [(k, shapes[k], expected[k][2]) for k in expected if k in shapes and shapes[k] != expected[k][2]]
    if wrong:
        k, got, want = wrong[0]
        raise CheckpointError(f"{folder}: the checkpoint does not match its config.json: {k} is {list(got)} in the "
                              f"checkpoint but {list(want)} in the model config.json describes")
    extra = [k for k in shapes if k not in expected and not k.endswith(("inv_freq", "lm_head.weight"))]
    if extra:
        raise CheckpointError(f"{folder}: the checkpoint does not match its config.json: {len(extra)} tensor(s) "
                              f"the model does not have, e.g. {extra[0]}")
    return {k: where[k] for k in expected if k in where}


def verify_checkpoint(config: dict, recipe, folder) -> int:
    """Check a model folder's weights against its config.json on the meta device (no memory); returns the
    number of safetensors files (0: the folder has only a config.json). Raises CheckpointError."""
    files = checkpoint_files(folder)
    if files:
        model, _ = build_skeleton(config, recipe)
        check_checkpoint(files, model, recipe, folder)
    return len(files)


def load_checkpoint(built, files_of: dict, device: str) -> int:
    """Replace the random weights with the checkpoint's (4-bit layers quantized anew); returns tensors loaded."""
    torch = require("torch")
    from safetensors import safe_open

    recipe = built.recipe
    expected = _expected_weights(built.model, recipe)
    handles = {}
    four_bit = {}
    if recipe.quantized:
        from .recipe import linear4bit_modules

        four_bit = {id(m): m for m in linear4bit_modules(built.model)}
    n = 0
    try:
        for key, f in files_of.items():
            if f not in handles:
                handles[f] = safe_open(str(f), framework="pt", device="cpu").__enter__()
            module, pname, _ = expected[key]
            tensor = handles[f].get_tensor(key)
            if id(module) in four_bit and pname == "weight":
                _requantize(module, tensor, recipe, device, built)
            else:
                with torch.no_grad():
                    module._parameters[pname].data.copy_(tensor)
            n += 1
    finally:
        for h in handles.values():
            h.__exit__(None, None, None)
    return n


def _requantize(module, dense, recipe, device, built) -> None:
    torch, bnb = require("torch", "bitsandbytes")
    old_state = module.quant_state
    weight = bnb.nn.Params4bit(
        dense.to(torch_dtype(recipe.dtype)), requires_grad=False, blocksize=recipe.blocksize,
        compress_statistics=recipe.double_quant, quant_type=recipe.quant, quant_storage=torch.uint8, module=module)
    weight = weight.to(device) if device != "cpu" else weight._quantize("cpu")
    module._parameters["weight"] = weight
    module.quant_state = weight.quant_state
    built.quant_states[:] = [weight.quant_state if s is old_state else s for s in built.quant_states]


# ------------------------------------------------------------------------------------------------------
# the step


class _Phases:
    """The step's current phase, told to the tracker (when one runs) and to an observer (tests inject faults)."""

    def __init__(self, on_phase=None):
        self.current = "setup"
        self.tracker = None
        self.on_phase = on_phase

    def enter(self, name: str) -> None:
        self.current = name
        if self.tracker is not None:
            self.tracker.enter(name, component="optimizer" if name == "optimizer" else "activations")
            if name == "backward":
                self.tracker.enter_sub("log_softmax backward")
        if self.on_phase is not None:
            self.on_phase(name)


def _train_step(model, optimizer, recipe, workload, vocab, device, gen, phases, *, as_float=False) -> object:
    """One training step as the tracer runs it; returns the loss (a detached 0-dim tensor, or with ``as_float``
    a Python float read right after backward, as the tracer reads it: no tensor outlives the backward)."""
    torch = require("torch")
    phases.enter("forward")
    ids = torch.randint(0, vocab, (workload.batch, workload.seq), generator=gen, device=device)
    labels = ids.clone()
    attention_mask = torch.ones_like(ids)  # held for the step as a collator's is; no padding, so not passed
    head = model.get_output_embeddings()
    switch = head.register_forward_pre_hook(lambda *_: phases.enter("loss") if phases.current == "forward" else None)
    autocast = (torch.autocast(device.type, dtype=torch_dtype(recipe.dtype)) if recipe.autocast
                else contextlib.nullcontext())
    try:
        with autocast:
            loss = model(input_ids=ids, labels=labels, use_cache=False).loss
    finally:
        switch.remove()
    phases.enter("backward")
    loss.backward()
    value = float(loss.detach()) if as_float else loss.detach()
    del loss
    phases.enter("optimizer")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    del ids, labels, attention_mask
    phases.enter("end")
    return value


def is_oom(exc: BaseException) -> bool:
    """torch's CUDA out-of-memory error, or a RuntimeError / CPU allocator error saying so."""
    torch = require("torch")
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def run_job(job: ProfileJob, *, on_phase=None, nvml=None) -> ProfileResult:
    """Measure one scenario in this process. ``on_phase(name)`` is called as each phase starts (tests raise
    from it to simulate a fault); ``nvml`` replaces the NVML module (tests)."""
    job.validate()
    with warnings.catch_warnings():
        # deprecations and CPU fallbacks (paged optimizers) the libraries warn about do not change the step
        for cat in (FutureWarning, UserWarning, DeprecationWarning):
            warnings.simplefilter("ignore", cat)
        return _run(job, on_phase, nvml)


def _run(job, on_phase, nvml_module) -> ProfileResult:
    torch = require("torch")
    cuda = job.device == "cuda"
    measured: dict = {}
    info: dict = {}
    nvdev = None
    baseline = 0
    if cuda:
        check_cuda(job.gpu_index)  # before the slow imports: a machine without a GPU answers at once
        if job.nvml:
            # the baseline comes first: nothing below may have touched the GPU yet (no context exists)
            nvdev = open_nvml(job.gpu_index, nvml_module)
            baseline = nvdev.used_bytes()
            info["nvml_baseline_bytes"] = baseline
    require("transformers", "peft")
    s = job.scenario
    recipe, workload = s.recipe, s.workload
    from vramplan.memory import effective_attn

    attn = effective_attn(s.model, recipe)
    if attn != recipe.attn:
        from dataclasses import replace

        recipe = replace(recipe, attn=attn)  # what transformers runs for this model, as planned and traced
    if needs_bitsandbytes(recipe):
        require("bitsandbytes")
        if cuda:
            check_bitsandbytes_cuda()
    phases = _Phases(on_phase)
    if cuda:
        device = torch.device("cuda", job.gpu_index)
        torch.cuda.set_device(device)  # creates the context
        torch.zeros(1, device=device)
        torch.cuda.synchronize(device)
        if nvdev is not None:
            _check_same_gpu(nvdev, job.gpu_index)
            # device memory the context holds: what NVML added, less the one small segment torch reserved
            measured["meas_context_bytes"] = max(0, nvdev.used_bytes() - baseline - torch.cuda.memory_reserved(device))
    else:
        device = torch.device("cpu")
    patches = contextlib.nullcontext()
    if not cuda:
        from .patches import tracing_patches

        patches = tracing_patches(emulate_cuda_autocast=recipe.autocast)  # the tracer's CPU emulation of CUDA
    built = optimizer = None
    failure = None
    try:
        with patches:
            phases.enter("load")
            built, optimizer = _build(job, recipe, device)
            _measure(job, built, optimizer, recipe, workload, device, phases, nvdev, baseline, measured, info)
    except Exception as exc:  # noqa: BLE001 - an OOM is a result; anything else is reported below
        if not is_oom(exc):
            raise
        failure = _oom_note(exc, phases.current, device, torch)
        del exc
    finally:
        built = optimizer = None
        _free(torch, cuda)
    if failure is not None:
        return ProfileResult("oom", measured={k: v for k, v in measured.items() if k in ("meas_context_bytes",
                                                                                        "meas_loaded_bytes")}
                             | {"meas_peak_phase": failure[0]}, error=failure[1], phase=failure[0], info=info)
    return ProfileResult("ok", measured=measured, info=info)


def _check_same_gpu(nvdev, gpu_index) -> None:
    """NVML and torch must look at the same card (CUDA orders GPUs fastest first, NVML by PCI bus)."""
    torch = require("torch")
    try:
        nv_uuid = nvdev.nvml.nvmlDeviceGetUUID(nvdev.handle)
    except Exception:  # a fake or old NVML without the call: nothing to compare
        return
    nv_uuid = nv_uuid.decode() if isinstance(nv_uuid, bytes) else str(nv_uuid)
    t_uuid = str(getattr(torch.cuda.get_device_properties(gpu_index), "uuid", "") or "")

    def bare(u: str) -> str:  # "GPU-8-4-4-4-12" and "8-4-4-4-12" name the same card
        u = u.strip().lower()
        for prefix in ("gpu-", "mig-"):
            if u.startswith(prefix):
                u = u[len(prefix):]
        return u.replace("-", "")

    a, b = bare(t_uuid), bare(nv_uuid)
    comparable = len(a) == len(b) == 32 and all(c in "0123456789abcdef" for c in a + b)
    if comparable and a != b and not nv_uuid.lower().startswith("mig-"):
        raise NoGpuError(f"torch's cuda:{gpu_index} is not NVML's GPU {nv_uuid}: set CUDA_DEVICE_ORDER=PCI_BUS_ID "
                         f"so both number the GPUs the same way")


def _build(job, recipe, device):
    """The tracer's builder on real tensors on ``device``, the checkpoint's weights when given, the optimizer."""
    model, config = build_skeleton(job.config, recipe)
    files = []
    if job.checkpoint:
        files = checkpoint_files(job.checkpoint)
        files_of = check_checkpoint(files, model, recipe, job.checkpoint) if files else {}
    if device.type == "cpu":
        from .patches import use_native_dropout

        use_native_dropout(model)  # CUDA's dropout kernel, as the tracer counts it
    built = materialize(model, config, recipe, fake=False, device=str(device), seed=job.seed)
    if files:
        load_checkpoint(built, files_of, str(device))
    optimizer = make_optimizer(built.adapters, recipe)
    return built, optimizer


def _measure(job, built, optimizer, recipe, workload, device, phases, nvdev, baseline, measured, info) -> None:
    torch = require("torch")
    cuda = device.type == "cuda"
    model = built.model
    vocab = built.config.vocab_size
    gen = torch.Generator(device=device).manual_seed(job.seed)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    losses = []
    for _ in range(job.warmup):
        losses.append(_train_step(model, optimizer, recipe, workload, vocab, device, gen, phases))
    sync()
    if cuda:
        measured["meas_loaded_bytes"] = int(torch.cuda.memory_allocated(device))
        torch.cuda.reset_peak_memory_stats(device)
    sampler = None
    if nvdev is not None:
        from .nvml import Sampler

        sampler = Sampler(nvdev, hz=job.sample_hz)
    times = []
    with sampler if sampler is not None else contextlib.nullcontext():
        for _ in range(job.steps):
            t0 = time.perf_counter()
            losses.append(_train_step(model, optimizer, recipe, workload, vocab, device, gen, phases))
            sync()
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    measured.update(step_time_s=step, tokens_per_s=workload.seq * workload.batch / step, steps=job.steps)
    info["step_times_s"] = times
    info["loss"] = float(losses[-1])
    if cuda:
        stats = torch.cuda.memory_stats(device)
        measured["meas_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
        measured["meas_peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
        info["peak_active_bytes"] = int(stats.get("active_bytes.all.peak", 0))
    if sampler is not None:
        measured["meas_peak_bytes"] = int(sampler.peak_used_bytes - baseline)
        info.update(nvml_samples=sampler.samples, nvml_rate_hz=round(sampler.rate_hz, 1),
                    nvml_peak_used_bytes=sampler.peak_used_bytes)
        if sampler.error:
            info["nvml_error"] = sampler.error
    if job.components or not cuda:
        _tracked_step(built, optimizer, recipe, workload, vocab, device, gen, phases, measured, info)


def _tracked_step(built, optimizer, recipe, workload, vocab, device, gen, phases, measured, info) -> None:
    """One more step under the LiveTracker: tensor bytes per component at the peak, as the tracer counts them."""
    from .trace import TRACE_PHASES, track_built

    Tracker = make_tracker()
    tracker = Tracker()
    model = built.model
    with tracker:
        hooks = track_built(tracker, built, optimizer)
        phases.tracker = tracker
        try:
            phases.enter("load")
            _train_step(model, optimizer, recipe, workload, vocab, device, gen, phases, as_float=True)
        finally:
            phases.tracker = None
            for h in hooks:
                h.remove()
    done = [tracker.phases[p] for p in TRACE_PHASES if p in tracker.phases]
    top = max(done, key=lambda p: p.peak_bytes)
    for c in COMPONENTS:
        measured[f"meas_{c}"] = int(top.components.get(c, 0))
    measured["meas_peak_tensor_bytes"] = int(top.peak_bytes)
    measured["meas_peak_phase"] = top.phase
    if device.type == "cpu":
        measured["meas_loaded_bytes"] = int(tracker.phases["load"].peak_bytes)
    info["tensor_timeline"] = {p.phase: int(p.peak_bytes) for p in done}
    info["peak_where"] = top.where


def _oom_note(exc, phase, device, torch) -> tuple[str, str]:
    """(phase, one line): what ran out, and the device's free memory at that moment."""
    first = " ".join(str(exc).split())
    first = first.split(". Of the allocated")[0][:240]
    where = f"out of memory in {phase}"
    if device.type == "cuda":
        try:
            free, total = torch.cuda.mem_get_info(device)
            where += (f"; free {free / 2**30:.2f} of {total / 2**30:.2f} GiB, torch allocated "
                      f"{torch.cuda.memory_allocated(device) / 2**30:.2f} GiB")
        except Exception:  # a context broken by the failure: the message alone
            pass
    return phase, f"{where} ({first})"


def _free(torch, cuda: bool) -> None:
    """Release what a finished (or failed) job held, so the next job starts from an empty allocator."""
    gc.collect()
    if cuda:
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        except RuntimeError:  # a context the failure broke: the process ends with the job (run_isolated)
            pass


# ------------------------------------------------------------------------------------------------------
# one fresh process per job (CUDA): a clean context, no leaked managed memory, OOM isolated


def _child(job, conn) -> None:
    try:
        result = run_job(job)
    except VramplanError as exc:
        result = ProfileResult("error", error=" ".join(str(exc).split()), fatal=_is_fatal(exc))
    except Exception as exc:  # noqa: BLE001 - reported as the row's error; the suite goes on
        result = ProfileResult("error", error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    except KeyboardInterrupt:
        return
    conn.send(result)
    conn.close()


def run_isolated(job: ProfileJob) -> ProfileResult:
    """Run the job in a fresh Python process (spawned) and return its result.

    bitsandbytes never frees the managed memory of paged optimizer state, torch keeps cuBLAS workspaces and
    loaded kernels, and an out-of-memory error can leave the allocator fragmented: a fresh process per job
    makes every measurement start from the same empty device. Ctrl-C stops the child and is raised here.
    """
    import multiprocessing as mp

    job.validate()
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(job, child), name="vramplan-profile", daemon=True)
    proc.start()
    child.close()
    try:
        while True:
            if parent.poll(0.2):
                try:
                    result = parent.recv()
                except EOFError:
                    result = None
                break
            if not proc.is_alive():
                result = parent.recv() if parent.poll(0) else None
                break
        proc.join()
    except KeyboardInterrupt:
        proc.terminate()
        proc.join()
        raise
    finally:
        parent.close()
    if result is None:
        return ProfileResult("error", error=f"the profiling process ended without a result (exit code "
                                            f"{proc.exitcode}); run it alone to see its output")
    return result


def run(job: ProfileJob, *, isolate: bool | None = None, on_phase=None) -> ProfileResult:
    """Run a job: in a fresh process on CUDA (``isolate`` default), in this one on CPU.

    A problem of the machine (no GPU, a library missing, NVML unavailable) is raised as its VramplanError; a
    problem of this scenario (a recipe the libraries refuse, a checkpoint that does not match) is a result with
    status ``error``.
    """
    if isolate is None:
        isolate = job.device == "cuda"
    if isolate:
        result = run_isolated(job)
        if result.fatal:
            raise VramplanError(result.error)
        return result
    try:
        return run_job(job, on_phase=on_phase)
    except VramplanError as exc:
        if _is_fatal(exc):
            raise
        return ProfileResult("error", error=" ".join(str(exc).split()))


__all__ = ["ProfileJob", "ProfileResult", "run", "run_job", "run_isolated", "profile_env", "device_gpu_spec",
           "check_cuda", "check_bitsandbytes_cuda", "verify_checkpoint", "NoGpuError", "CheckpointError"]
