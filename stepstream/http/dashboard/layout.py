"""A layered drawing of a flow version, computed on the server (no JavaScript layout).

Sugiyama's method, in its plain form:

1. cycles (manual transitions may loop) are broken by reversing the back
   edges a depth-first search from the start steps finds; those edges are
   drawn as arcs under the graph;
2. each step's layer is its longest path from a start step, so every edge
   points rightwards and a join sits right of all its branches;
3. an edge spanning several layers gets a hidden point in each layer it
   crosses, so it is ordered like a step and does not cut through boxes;
4. within a layer, steps are ordered by the barycenter (mean position) of
   their neighbours, sweeping right then left a few times, which untangles
   branches and joins for graphs of the size flows have (tens of steps).

A few dozen lines beat a vendored library here: flows are small, the output
is static SVG built by a template, and nothing runs in the browser.

Text is fitted here too, so no label is cut inside a word: a step's name takes
up to two lines broken between words, an identifier is shortened at a `-`, `_`
or `.`, an edge's label keeps whole transition names, each with "…" where
something was left out (the whole text is in the element's tooltip). SVG text
does not wrap by itself, so widths are estimated from DejaVu Sans Bold's
advances, the widest face the dashboard's font stack may fall back on: what is
estimated to fit does fit, whatever the font (tests/test_dashboard_browser.py
measures the drawn text).
"""

import re
import unicodedata
from dataclasses import dataclass, field

NODE_W = 210
NODE_H = 76  # room for a name on two lines above the identifier and the count
LAYER_GAP = 90  # horizontal space between layers, for edges and their labels
ROW_GAP = 28
MARGIN = 24
SWEEPS = 8


# inside a step's box (see flow.html): the name's lines, then the identifier beside the count
PAD = 14
NAME_SIZE, SUB_SIZE, EDGE_LABEL_SIZE = 13, 11, 11  # px: .step-name, .step-id, .edge-label
NAME_W = NODE_W - 2 * PAD  # the name runs above the count
PILL_X, PILL_W, PILL_H = NODE_W - 58, 48, 22
PILL_Y = NODE_H - 30
SUB_Y = PILL_Y + 15  # the identifier's baseline, level with the count's
SUB_W = PILL_X - PAD - 6
NAME_Y = {1: (30,), 2: (22, 38)}  # the name's baselines, by its number of lines
EDGE_LABEL_W = LAYER_GAP - 8

# DejaVu Sans Bold's advance widths in em, rounded up to 0.05; others: 0.8 em, East
# Asian wide characters 1 em. Regular weight is at most 0.94 of bold; monospace 0.61.
_EM = {
    char: em
    for em, chars in (
        (0.35, " 'ijl"),
        (0.4, ",./:;IJ\\|"),
        (0.45, "-f"),
        (0.5, "!()[]_`rt"),
        (0.55, '"*'),
        (0.6, "?csz"),
        (0.65, "Lx"),
        (0.7, "0123456789$EFTaekovy"),
        (0.75, "CPSYZbdghnpqu{}"),
        (0.8, "ABKRVX"),
        (0.85, "#+<=>DGHNOQU^~"),
        (0.9, "&"),
        (0.95, "w"),
        (1.0, "@M"),
        (1.05, "%m"),
        (1.15, "W"),
    )
    for char in chars
}
REGULAR = 0.94
MONO_EM = 0.61
ELLIPSIS = "…"
_BREAKS = re.compile(r"[-_./:]")  # where an identifier may be shortened


def text_width(text: str, size: float, bold: bool = True, mono: bool = False) -> float:
    """The estimated width in px of `text` at `size` px: at least what a browser draws."""
    if mono:
        return len(text) * MONO_EM * size
    em = 0.0
    for char in text:
        if char in _EM:
            em += _EM[char]
        else:
            em += 1.0 if _wide(char) else 0.8
    return em * size * (1 if bold else REGULAR)


def shorten(text: str, width: float, size: float, bold: bool = True, mono: bool = False) -> str:
    """`text` if it fits, else its longest start that ends with a word, else with an
    identifier's part (before a `-`, `_`, `.`, `/` or `:`), and "…" after it; a single
    part too wide for the width is the only text cut elsewhere."""

    def fits(t: str) -> bool:
        return text_width(t, size, bold, mono) <= width

    if fits(text):
        return text
    for breaks in (re.compile(r"\s"), _BREAKS):  # between words first, then at a part
        for cut in sorted((m.start() for m in breaks.finditer(text)), reverse=True):
            head = text[:cut].rstrip()
            if head and fits(head + ELLIPSIS):
                return head + ELLIPSIS
    head = text
    while head and not fits(head + ELLIPSIS):
        head = head[:-1]
    return head + ELLIPSIS


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in "WF"


def _parts(word: str) -> list[str]:
    """A word's parts a line may end after: each `-`, `_`, `.` or `/`, and each East
    Asian wide character (Chinese and Japanese break between any two)."""
    parts = [""]
    for char in word:
        if _wide(char) and parts[-1]:
            parts.append("")
        parts[-1] += char
        if char in "-_./" or _wide(char):
            parts.append("")
    return [p for p in parts if p]


def _pieces(text: str, width: float, size: float, bold: bool) -> list[tuple[str, str]]:
    """(glue, piece): the words, a word too wide for a line in its parts (glued with
    nothing, so it reads as one word again)."""
    pieces = []
    for word in text.split():
        parts = _parts(word) if text_width(word, size, bold) > width else [word]
        pieces += [("" if k else " ", part) for k, part in enumerate(parts)]
    return pieces or [(" ", "")]


def wrap(text: str, width: float, size: float, lines: int = 2, bold: bool = True) -> list[str]:
    """`text` in at most `lines` lines broken between words (or after a long word's
    `-`, `_`, `.` or `/`), the last ending in "…" if anything was left out."""

    def fits(t: str) -> bool:
        return text_width(t, size, bold) <= width

    pieces = _pieces(text, width, size, bold)
    out: list[str] = []
    i = 0
    while i < len(pieces) and len(out) < lines:
        line = pieces[i][1]
        i += 1
        while i < len(pieces) and fits(line + pieces[i][0] + pieces[i][1]):
            line += pieces[i][0] + pieces[i][1]
            i += 1
        out.append(line)
    if i < len(pieces):
        out[-1] = shorten(out[-1] + "".join(g + p for g, p in pieces[i:]), width, size, bold)
    return [shorten(line, width, size, bold) for line in out]  # a part too wide alone


def edge_text(identifiers: list[str], width: float = EDGE_LABEL_W) -> str:
    """Transition names for an edge: as many whole ones as fit, then "+N" for the rest."""
    size = EDGE_LABEL_SIZE
    for shown in range(len(identifiers), 0, -1):
        rest = len(identifiers) - shown
        text = ", ".join(identifiers[:shown]) + (f" +{rest}" if rest else "")
        if text_width(text, size, bold=False) <= width:
            return text
    more = f" +{len(identifiers) - 1}" if len(identifiers) > 1 else ""
    room = width - text_width(more, size, bold=False)
    return shorten(identifiers[0], room, size, bold=False) + more


def name_lines(node: "Node") -> list[tuple[str, float]]:
    """A step's name (else its identifier) as lines with their baselines."""
    lines = wrap(node.name or node.identifier, NAME_W, NAME_SIZE)
    return [(line, node.y + y) for line, y in zip(lines, NAME_Y[len(lines)], strict=True)]


def subtitle(node: "Node") -> str:
    """The line beside the count: the step's role and its identifier, shortened at a part."""
    role = "start · " if node.start else "final · " if node.final else ""
    room = SUB_W - text_width(role, SUB_SIZE, mono=True)
    return role + shorten(node.identifier, room, SUB_SIZE, mono=True)


@dataclass
class Node:
    identifier: str
    name: str
    layer: int = 0
    order: float = 0
    x: float = 0
    y: float = 0
    start: bool = False
    final: bool = False
    dummy: bool = False


@dataclass
class Edge:
    source: str
    target: str
    label: str
    automatic: bool
    back: bool = False
    text: str = ""  # the label as drawn (edge_text); `label` has every name
    path: str = ""
    label_x: float = 0
    label_y: float = 0


@dataclass
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: float
    height: float
    layers: int = 0
    by_identifier: dict = field(default_factory=dict)


def _break_cycles(order: list[str], succ: dict[str, list[str]], starts: list[str]) -> set:
    """The back edges of a depth-first search from the start steps (iterative: no recursion)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    back = set()
    for root in starts + order:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                back.add((node, child))
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(succ[child])))
    return back


def layout(steps: list[tuple[str, str]], transitions: list[tuple[str, str, str, str]]) -> Layout:
    """steps: (identifier, name) in published order; transitions: (identifier, from, to, type)."""
    order = [identifier for identifier, _ in steps]
    names = dict(steps)
    labels: dict[tuple[str, str], list[str]] = {}
    automatic: dict[tuple[str, str], bool] = {}
    for identifier, a, b, kind in transitions:
        if a not in names or b not in names:
            continue
        names_here = labels.setdefault((a, b), [])
        if identifier not in names_here:
            names_here.append(identifier)
        automatic[(a, b)] = automatic.get((a, b), True) and kind == "automatic"
    pairs = list(labels)
    succ: dict[str, list[str]] = {s: [] for s in order}
    for a, b in pairs:
        succ[a].append(b)
    incoming = {b for a, b in pairs if a != b}
    outgoing = {a for a, b in pairs if a != b}
    starts = [s for s in order if s not in incoming]
    back = _break_cycles(order, succ, starts)

    # 2. longest-path layering over the acyclic edges (Kahn's order)
    forward = [(a, b) for a, b in pairs if (a, b) not in back and a != b]
    fsucc: dict[str, list[str]] = {s: [] for s in order}
    indegree = dict.fromkeys(order, 0)
    for a, b in forward:
        fsucc[a].append(b)
        indegree[b] += 1
    layer = dict.fromkeys(order, 0)
    ready = [s for s in order if indegree[s] == 0]
    while ready:
        node = ready.pop(0)
        for child in fsucc[node]:
            layer[child] = max(layer[child], layer[node] + 1)
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)

    nodes = {
        s: Node(s, names[s] or "", layer[s], start=s not in incoming, final=s not in outgoing)
        for s in order
    }
    # 3. hidden points on long edges; each forward edge becomes a chain of layer-to-layer links
    chains: dict[tuple[str, str], list[str]] = {}
    links: list[tuple[str, str]] = []
    for a, b in forward:
        chain = [a]
        for k in range(layer[a] + 1, layer[b]):
            dummy = f"\x00{a}\x00{b}\x00{k}"
            nodes[dummy] = Node(dummy, "", k, dummy=True)
            chain.append(dummy)
        chain.append(b)
        chains[(a, b)] = chain
        links.extend(zip(chain, chain[1:], strict=False))

    # 4. barycenter ordering, starting from the published order
    count = max((n.layer for n in nodes.values()), default=-1) + 1
    rows: list[list[str]] = [[] for _ in range(count)]
    for key, entry in nodes.items():
        rows[entry.layer].append(key)
    for row in rows:
        for i, key in enumerate(row):
            nodes[key].order = i
    preds: dict[str, list[str]] = {k: [] for k in nodes}
    succs: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in links:
        succs[a].append(b)
        preds[b].append(a)

    def sweep(layer_indexes, neighbours):
        for i in layer_indexes:
            row = rows[i]
            for key in row:
                near = neighbours[key]
                if near:
                    nodes[key].order = sum(nodes[n].order for n in near) / len(near)
            row.sort(key=lambda k: nodes[k].order)
            for position, key in enumerate(row):
                nodes[key].order = position

    for _ in range(SWEEPS):
        sweep(range(1, count), preds)
        sweep(range(count - 2, -1, -1), succs)

    # coordinates: layers are columns, each centred vertically on the tallest
    tallest = max((len(r) for r in rows), default=0)
    inner_h = tallest * NODE_H + max(tallest - 1, 0) * ROW_GAP
    arc_room = 50 if back else 0
    for i, row in enumerate(rows):
        row_h = len(row) * NODE_H + max(len(row) - 1, 0) * ROW_GAP
        top = MARGIN + (inner_h - row_h) / 2
        for position, key in enumerate(row):
            box = nodes[key]
            box.x = MARGIN + i * (NODE_W + LAYER_GAP)
            box.y = top + position * (NODE_H + ROW_GAP)
    width = MARGIN * 2 + count * NODE_W + max(count - 1, 0) * LAYER_GAP
    height = MARGIN * 2 + inner_h + arc_room

    edges = []
    for a, b in pairs:
        edge = Edge(a, b, ", ".join(labels[(a, b)]), automatic[(a, b)])
        edge.text = edge_text(labels[(a, b)])
        if (a, b) in chains:
            _route(edge, [nodes[k] for k in chains[(a, b)]])
        else:
            edge.back = True
            _arc(edge, nodes[a], nodes[b], MARGIN + inner_h + arc_room - 8)
        edges.append(edge)
    real = [nodes[s] for s in order]
    return Layout(real, edges, width, height, count, {n.identifier: n for n in real})


def _route(edge: Edge, chain: list[Node]) -> None:
    """A smooth path from the source's right side to the target's left side, via hidden points."""
    points = []
    for i, node in enumerate(chain):
        cy = node.y + (NODE_H / 2 if not node.dummy else NODE_H / 2)
        if i == 0:
            points.append((node.x + NODE_W, cy))
        elif i == len(chain) - 1:
            points.append((node.x, cy))
        else:
            points.append((node.x, cy))
            points.append((node.x + NODE_W, cy))
    d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
    for (x1, y1), (x2, y2) in zip(points, points[1:], strict=False):
        if y1 == y2:
            d += f" L{x2:.1f},{y2:.1f}"
        else:
            mx = (x1 + x2) / 2
            d += f" C{mx:.1f},{y1:.1f} {mx:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    edge.path = d
    (x1, y1), (x2, y2) = points[-2], points[-1]
    edge.label_x, edge.label_y = (x1 + x2) / 2, (y1 + y2) / 2 - 8


def _arc(edge: Edge, source: Node, target: Node, bottom: float) -> None:
    """A back edge (a loop): an arc from under the source to under the target."""
    x1, y1 = source.x + NODE_W * 0.6, source.y + NODE_H
    x2, y2 = target.x + NODE_W * 0.4, target.y + NODE_H
    if source is target:
        x1, x2 = source.x + NODE_W * 0.7, source.x + NODE_W * 0.3
    edge.path = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{bottom:.1f} {x2:.1f},{bottom:.1f} {x2:.1f},{y2:.1f}"
    edge.label_x, edge.label_y = (x1 + x2) / 2, bottom - 4
