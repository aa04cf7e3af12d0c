#!/usr/bin/env python3
"""The PyTorch peer of the metastep benchmark suite (scripts/bench/run.lua).

Reads one job per line on standard input, runs it once with PyTorch (CPU autograd, float64)
and answers one line on standard output:

    quad d=D T=T lr=ETA threads=N   -> dG/deta of G = (1/T) log f(w_T) through T GD steps
    ls d=D T=T lr=ETA meta_lr=M iterations=K threads=N
                                    -> train-by-validation meta-training of GD's step size
    loop d=D T=T lr=ETA             -> the d = 10 loop: T autograd steps from a Python loop
    quit

Answers: "ok time=SECONDS value=V grad=G" (time measured here, around the job's work only,
after its problem is built; clock=cpu in a job: the process's CPU time instead of wall time),
or "error MESSAGE". The first line written is "ready torch=VERSION"
or "notorch REASON" (then the process exits). The problems are built from the same formulas as
run.lua's (see there), so the values can be compared with metastep's.
"""
import math
import sys
import time

try:
    import torch
except Exception as e:  # no torch: say so and stop
    print("notorch " + str(e).replace("\n", " "), flush=True)
    sys.exit(0)

torch.set_default_dtype(torch.float64)
_cache = {}
now = time.perf_counter


def quadratic(d):
    """H = diag(1 + 9 i/(d-1)) + u u^T + v v^T, u_i = cos(0.7 (i+1))/sqrt(d),
    v_i = sin(1.3 (i+1))/sqrt(d); w0_i = cos(0.3 (i+1)) + 0.5 (i = 0..d-1)."""
    key = ("quad", d)
    if key not in _cache:
        i = torch.arange(1, d + 1, dtype=torch.float64)
        lam = 1 + 9 * (i - 1) / max(d - 1, 1)
        u = torch.cos(0.7 * i) / math.sqrt(d)
        v = torch.sin(1.3 * i) / math.sqrt(d)
        H = torch.diag(lam) + torch.outer(u, u) + torch.outer(v, v)
        w0 = torch.cos(0.3 * i) + 0.5
        _cache.clear()  # one problem at a time (H is 128 MB at d = 4000)
        _cache[key] = (H.contiguous(), w0)
    return _cache[key]


def hashed(k, n):
    """n numbers in [-0.5, 0.5) from the integer hash ((k + j) * 2654435761) mod 2^32."""
    j = torch.arange(k, k + n, dtype=torch.int64)
    return ((j * 2654435761) % 4294967296).to(torch.float64) / 4294967296 - 0.5


def least_squares(d):
    """X [2d, d] and Xv [2d, d] hashed; w*_j = (7919 j mod 13)/13 - 0.5;
    y = X w* + 0.5 * hashed noise (as run.lua builds them)."""
    n = 2 * d
    X = hashed(0, n * d).reshape(n, d)
    Xv = hashed(n * d, n * d).reshape(n, d)
    ws = ((torch.arange(d, dtype=torch.int64) * 7919) % 13).to(torch.float64) / 13 - 0.5
    y = X @ ws + 0.5 * hashed(2 * n * d, n)
    yv = Xv @ ws + 0.5 * hashed(2 * n * d + n, n)
    return X, y, Xv, yv


def job_quad(a):
    d, T, lr = int(a["d"]), int(a["T"]), float(a["lr"])
    H, w0 = quadratic(d)
    t0 = now()
    eta = torch.tensor(lr, requires_grad=True)
    w = w0
    for _ in range(T):
        w = w - eta * (H @ w)
    G = torch.log(0.5 * torch.dot(w, H @ w)) / T
    (g,) = torch.autograd.grad(G, eta)
    return now() - t0, G.item(), g.item()


def job_ls(a):
    d, T, lr = int(a["d"]), int(a["T"]), float(a["lr"])
    meta_lr, K = float(a["meta_lr"]), int(a["iterations"])
    X, y, Xv, yv = least_squares(d)
    n, nv = X.shape[0], Xv.shape[0]
    t0 = now()
    eta_v, G = lr, float("nan")
    for _ in range(K):
        eta = torch.tensor(eta_v, requires_grad=True)
        w = torch.zeros(d)
        for _ in range(T):
            w = w - eta * (X.t() @ (X @ w - y) / n)
        r = Xv @ w - yv
        L = torch.dot(r, r) / (2 * nv)
        (g,) = torch.autograd.grad(L, eta)
        G = L.item()
        eta_v = max(eta_v - meta_lr * g.item(), 0.0)
    return now() - t0, G, eta_v


def job_loop(a):
    d, T, lr = int(a["d"]), int(a["T"]), float(a["lr"])
    H, w0 = quadratic(d)
    t0 = now()
    eta = torch.tensor(lr, requires_grad=True)
    w = w0
    for _ in range(T):
        w = w - eta * (H @ w)
    G = torch.log(0.5 * torch.dot(w, H @ w)) / T
    (g,) = torch.autograd.grad(G, eta)
    return now() - t0, G.item(), g.item()


JOBS = {"quad": job_quad, "ls": job_ls, "loop": job_loop}


def main():
    print("ready torch=" + torch.__version__, flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        a = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        try:
            torch.set_num_threads(int(a.get("threads", "1")))
            global now
            now = time.process_time if a.get("clock") == "cpu" else time.perf_counter
            t, value, grad = JOBS[words[0]](a)
            print("ok time=%.9g value=%.17g grad=%.17g" % (t, value, grad), flush=True)
        except Exception as e:
            print("error " + (type(e).__name__ + ": " + str(e)).replace("\n", " "), flush=True)


if __name__ == "__main__":
    main()
