"""PyTorch peer of scripts/bench_learned.lua: the same inner step of a 784-100-20-10 MLP
(n = 1000 random images, mini-batches of 32, full-batch training loss each step) with the
same learned MLP optimizer (22 normalised per-parameter features + 11 step embeddings, 32 ReLU
units, update d * exp(0.001 s) * 0.001), CPU, float64, one thread; without autograd through the
optimizer (torch.no_grad for the update), and with it (create_graph, backward of the summed
losses through T steps, per step).

    /usr/bin/python3 scripts/bench/peer_learned.py [T] [rounds]   (Debian's python3-torch)
"""
import math
import sys
import time

import torch

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)
T = int(sys.argv[1]) if len(sys.argv) > 1 else 10
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
LAYERS = [784, 100, 20, 10]
DECAYS = torch.tensor([0.5, 0.9, 0.99, 0.999, 0.9999]).view(1, 5)
TAUS = torch.tensor([3, 10, 30, 1e2, 3e2, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5])

g = torch.Generator().manual_seed(1)
X = torch.rand(1000, 784, generator=g)
Y = torch.randint(0, 10, (1000,), generator=g)
sizes = [(LAYERS[i] + 1) * LAYERS[i + 1] for i in range(len(LAYERS) - 1)]
P = sum(sizes)


def init_w():
    parts = []
    for i in range(len(LAYERS) - 1):
        fan_in, fan_out = LAYERS[i], LAYERS[i + 1]
        parts.append(torch.randn(fan_in * fan_out, generator=g) * 1.2 / math.sqrt(fan_in))
        parts.append(torch.zeros(fan_out))
    return torch.cat(parts)


def loss(w, x, y):
    h, k = x, 0
    for i in range(len(LAYERS) - 1):
        a, b = LAYERS[i], LAYERS[i + 1]
        W = w[k:k + a * b].view(a, b)
        k += a * b
        bias = w[k:k + b]
        k += b
        h = h @ W + bias
        if i < len(LAYERS) - 2:
            h = torch.relu(h)
    return torch.nn.functional.cross_entropy(h, y)


theta = [torch.randn(22, 32, generator=g) * 0.1, torch.randn(11, 32, generator=g) * 0.1,
         torch.zeros(32), torch.randn(32, 2, generator=g) * 0.01, torch.zeros(2)]
for t in theta:
    t.requires_grad_(True)


def step(w, m, v, k, create_graph):
    idx = torch.randint(0, 1000, (32,), generator=g)
    gw, = torch.autograd.grad(loss(w, X[idx], Y[idx]), w, create_graph=create_graph)
    if not create_graph:
        with torch.no_grad():
            return update(w, gw, m, v, k)
    return update(w, gw, m, v, k)


def update(w, gw, m, v, k):
    gc, wc = gw.view(-1, 1), w.view(-1, 1)
    m = m * DECAYS + gc * (1 - DECAYS)
    v = v * DECAYS + gc * gc * (1 - DECAYS)
    rs = 1 / torch.sqrt(v + 1e-8)
    x = torch.cat([gc, wc, m, v, rs, m * rs], 1)
    x = x / torch.sqrt((x * x).mean(0, keepdim=True) + 1e-20)
    tf = torch.tanh(k / TAUS).view(1, -1)
    h = torch.relu(x @ theta[0] + tf @ theta[1] + theta[2])
    o = h @ theta[3] + theta[4]
    w = w - 0.001 * o[:, 0] * torch.exp(0.001 * o[:, 1])
    return w, m, v


def run(traced):
    w = init_w().requires_grad_(True)
    m, v = torch.zeros(P, 5), torch.zeros(P, 5)
    total = 0
    for k in range(1, T + 1):
        w, m, v = step(w, m, v, float(k), traced)
        if not traced:
            w, m, v = w.detach().requires_grad_(True), m.detach(), v.detach()
            with torch.no_grad():
                loss(w, X, Y)
        else:
            total = total + loss(w, X, Y)
    if traced:
        total.backward()


def median(traced):
    ts = []
    for _ in range(ROUNDS):
        t0 = time.process_time()
        run(traced)
        ts.append(time.process_time() - t0)
    ts.sort()
    return ts[(ROUNDS - 1) // 2]


print(f"PyTorch {torch.__version__}, float64, 1 thread, 784-100-20-10 ({P} parameters), T = {T}")
print(f"  without autograd through the optimizer: {1000 * median(False) / T:8.2f} ms per inner step")
print(f"  with autograd (create_graph, backward): {1000 * median(True) / T:8.2f} ms per inner step")
