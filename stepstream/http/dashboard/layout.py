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
"""

from dataclasses import dataclass, field

NODE_W = 210
NODE_H = 64
LAYER_GAP = 90  # horizontal space between layers, for edges and their labels
ROW_GAP = 28
MARGIN = 24
SWEEPS = 8


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
