"""``vramplan MODEL --gpu G`` on a terminal: LoRA vs QLoRA at a glance, with every knob editable in place.

Example usage::

    from vramplan.tui.app import VramplanApp
    VramplanApp("7b", "24gb").run()

Known Limitations: knobs outside the panel (alpha, dropout, adapter dtype, dtype, quant type, block size,
autocast, GPUs, sharding) keep the values given on the command line; a Hub id is fetched only on Enter
and only when started with ``--online``.
"""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Footer, Input, Label, Select, Static

from ..errors import VramplanError
from ..spec import ATTN_IMPLS, OPTIMIZERS
from .state import AUTO_OPTIMIZER, FieldErrors, Session, export_html, export_json, report_available
from .widgets import Bars, CommandLine, Components, OnOff, Timeline, TitleBar, WhatFits

# (field, key, label): the key focuses the field (switches: toggles it); the label underlines the key.
TEXT_FIELDS = (
    ("model", "m", "[u]m[/u]odel"),
    ("gpu", "g", "[u]G[/u]PU"),
    ("seq", "s", "[u]s[/u]eq"),
    ("batch", "b", "[u]b[/u]atch"),
    ("rank", "r", "[u]r[/u]ank"),
    ("targets", "t", "[u]t[/u]argets"),
)
CHOICE_FIELDS = (
    ("optimizer", "o", "[u]o[/u]ptimizer", (AUTO_OPTIMIZER, *OPTIMIZERS)),
    ("attn", "a", "[u]a[/u]ttention", ATTN_IMPLS),
)
SWITCH_FIELDS = (
    ("grad_ckpt", "k", "grad chec[u]k[/u]pointing"),
    ("double_quant", "d", "[u]d[/u]ouble quant"),
    ("kbit_prep", "p", "kbit-[u]p[/u]rep (QLoRA)"),
)

HELP = """\
[b]vramplan[/b]: will LoRA or QLoRA fine-tuning of this model fit on this GPU?

[b]Keys[/b]
  m g s b r t   edit model, GPU, seq, batch, rank, targets
                (Enter or Esc: back to the results)
  o a           optimizer, attention implementation (Enter opens the list)
  k d p         toggle grad checkpointing, double quant, kbit-prep
  tab           next field (shift+tab: previous)
  j             write the plan JSON (as `vramplan plan --json`) here
  c             copy the `vramplan plan` command line of this screen
  h             write the HTML report (as `vramplan report`) here
  ? or F1       this help
  q             quit (outside a field; ctrl+q anywhere)

[b]Fields[/b]
  model      a shorthand (7b, 8b, 70b), a catalogue name, a config.json
  GPU        a size (24gb = 24 GiB) or a card (rtx4090, a100-80gb, h100);
             empty: no verdict
  targets    all-linear, or a comma list such as q_proj,v_proj
  optimizer  auto = adamw for LoRA, paged_adamw_32bit for QLoRA
  Every change is planned at once. A value that cannot be planned is
  explained under its field; the screen keeps the last valid plan.

[b]Reading the screen[/b]
  Each bar stacks the components at the peak; the legend names each
  fill character. ┃ is the GPU's memory. The timeline shows the device
  memory at each phase of the step (load = between steps, forward,
  loss, backward, optimizer step); * marks the phase of the peak.
  What fits: the largest batch (at this seq) and the largest seq (at
  this batch) that fit this GPU, and the smallest catalogue GPU that
  fits the job as it is. Sizes are GiB (1024³ bytes) per GPU, as
  nvidia-smi shows them.

Esc, q or ? closes this help."""


class HelpScreen(ModalScreen):
    """The keys, the fields and how to read the screen."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(HELP, id="help-text")


class VramplanApp(App):
    """LoRA vs QLoRA at a glance, knobs on the left, every change planned at once.

    Example usage::

        VramplanApp("8b", "rtx4090", kw={"seq": 4096}).run()

    Known Limitations: see the module docstring.
    """

    CSS_PATH = "app.tcss"
    TITLE = "vramplan"
    AUTO_FOCUS = "#results"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark,f1", "help", "help", key_display="?"),
        Binding("j", "export_json", "JSON"),
        Binding("c", "copy_command", "copy command"),
        Binding("h", "export_html", "HTML report"),
        Binding("escape", "leave_field", "done", show=False),
        *(Binding(key, f"edit('{name}')", show=False) for name, key, _ in TEXT_FIELDS),
        *(Binding(key, f"edit('{name}')", show=False) for name, key, _, _ in CHOICE_FIELDS),
        *(Binding(key, f"edit('{name}')", show=False) for name, key, _ in SWITCH_FIELDS),
    ]

    def __init__(self, model: str = "7b", gpu: str | None = "24gb", kw: dict | None = None, *,
                 shapes: dict | None = None, export_dir: str | Path = "."):
        super().__init__()
        self.session = Session(kw, shapes)
        self.export_dir = Path(export_dir)
        values = self.session.initial_values(model, gpu)
        self.planned = self.session.plan(values, fetch=True)  # the CLI checked these already; raises if not
        self._initial = values
        self._values = dict(values)  # what the fields held at the last recompute
        self._has_report = report_available()
        self.errors: dict[str, str] = {}

    # --- layout -----------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        v = self._initial
        yield TitleBar(self.planned, id="title")
        with Horizontal(id="body"):
            with VerticalScroll(id="knobs"):
                for name, _, label in TEXT_FIELDS:
                    with Horizontal(classes="knob"):
                        yield Label(label, classes="knob-label")
                        yield Input(str(v[name]), id=f"f-{name}", compact=True, select_on_focus=True)
                    yield Static("", id=f"err-{name}", classes="error")
                for name, _, label, options in CHOICE_FIELDS:
                    with Horizontal(classes="knob"):
                        yield Label(label, classes="knob-label")
                        yield Select([(o, o) for o in options], value=v[name], allow_blank=False,
                                     id=f"f-{name}", compact=True)
                    yield Static("", id=f"err-{name}", classes="error")
                for name, _, label in SWITCH_FIELDS:
                    yield OnOff(label, bool(v[name]), id=f"f-{name}", compact=True, classes="switch")
                yield WhatFits(self.planned, id="fits")
            with VerticalScroll(id="results"):
                yield Bars(self.planned, id="bars")
                yield Timeline(self.planned, id="timeline")
                yield Components(self.planned, id="components")
                yield CommandLine(self.planned, id="command")
        yield Footer()

    def on_mount(self) -> None:
        self._fields = {name: self.query_one(f"#f-{name}") for name in self.session_fields()}
        self._views = [self.query_one(sel) for sel in ("#bars", "#timeline", "#components", "#command")]
        self._fits = self.query_one("#fits", WhatFits)
        self._title = self.query_one("#title", TitleBar)

    @staticmethod
    def session_fields() -> list[str]:
        return [f[0] for f in TEXT_FIELDS] + [f[0] for f in CHOICE_FIELDS] + [f[0] for f in SWITCH_FIELDS]

    # --- planning ---------------------------------------------------------------------------------------
    def values(self) -> dict:
        """What the fields hold now."""
        return {name: widget.value for name, widget in self._fields.items()}

    def recompute(self, fetch: bool = False) -> bool:
        """Plan what the fields hold; on an error show it under its field and keep the last valid plan."""
        values = self.values()
        if values == self._values and not fetch:
            return not self.errors  # nothing changed (fields report their first value when mounted)
        self._values = values
        try:
            planned = self.session.plan(values, fetch=fetch)
        except FieldErrors as exc:
            self._show_errors(exc.errors)
            self._title.show(self.planned, invalid=True)
            return False
        self._show_errors({})
        self.planned = planned
        for view in self._views:
            view.show(planned)
        self._title.show(planned, invalid=False)
        # The "what fits" solvers plan ~200 scenarios (~15 ms): solve them once the new plan is on screen.
        self.call_after_refresh(self._show_fits, planned)
        return True

    def _show_fits(self, planned) -> None:
        if planned is self.planned:  # skip states already replaced by a newer keystroke
            self._fits.show(planned)

    def _show_errors(self, errors: dict[str, str]) -> None:
        for name in set(self.errors) | set(errors):
            box = self.query_one(f"#err-{name}", Static)
            if name in errors:
                box.update(f"✗ {errors[name]}")
                box.add_class("-shown")
            else:
                box.update("")
                box.remove_class("-shown")
        self.errors = dict(errors)

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _field_changed(self, event) -> None:
        self.recompute()

    @on(Input.Submitted)
    def _field_submitted(self, event: Input.Submitted) -> None:
        self.recompute(fetch=True)
        self.action_leave_field()

    # --- actions ----------------------------------------------------------------------------------------
    def action_edit(self, name: str) -> None:
        """Focus a field; a switch is toggled at once."""
        widget = self._fields[name]
        widget.focus()
        if isinstance(widget, Checkbox):
            widget.toggle()

    def action_leave_field(self) -> None:
        """Back from a field to the results (where single-letter keys work again)."""
        self.query_one("#results").focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_export_json(self) -> None:
        """Write the plan JSON of the screen's state to the export folder."""
        try:
            path = export_json(self.planned, self.export_dir)
        except VramplanError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        self.notify(f"wrote {path}", title="JSON")

    def check_action(self, action: str, parameters) -> bool | None:
        """Offer the HTML export only where the report builder is installed."""
        if action == "export_html":
            return self._has_report
        return True

    def action_export_html(self) -> None:
        """Write the HTML report of the screen's state (``vramplan report``) in a thread: it takes a second."""
        self.notify("writing the HTML report…", title="HTML", timeout=3)
        self._write_report(self.planned)

    @work(thread=True, exclusive=True, group="report")
    def _write_report(self, planned) -> None:
        try:
            path = export_html(planned, self.export_dir)
        except VramplanError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error", timeout=8)
            return
        self.call_from_thread(self.notify, f"wrote {path}", title="HTML")

    def action_copy_command(self) -> None:
        """Copy the `vramplan plan` command line (the terminal must support OSC 52) and show it."""
        command = self.planned.command_line()
        self.copy_to_clipboard(command)
        self.notify(command, title="copied", timeout=8)


def run_app(model: str, gpu: str | None, kw: dict, shapes: dict | None = None) -> None:
    """Start the terminal UI (the CLI's compare command calls this on a terminal)."""
    VramplanApp(model, gpu, kw, shapes=shapes).run()


def screenshot(path: str | Path, model: str = "7b", gpu: str | None = "24gb", size: tuple[int, int] = (120, 34),
               kw: dict | None = None) -> Path:
    """Write an SVG of the screen as it opens (headless): the README's docs/tui.svg comes from here.

    Example::

        python -c "from vramplan.tui.app import screenshot; screenshot('docs/tui.svg')"
    """
    import asyncio

    from .state import write_atomic

    async def take() -> str:
        app = VramplanApp(model, gpu, kw)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            return app.export_screenshot(title=f"vramplan {model}" + (f" --gpu {gpu}" if gpu else ""))

    return write_atomic(Path(path), asyncio.run(take()))
