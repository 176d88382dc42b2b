"""The top 96 singular triplets of one 3072 x 768 task matrix (TSV-M's share at K = 8 on ViT-B/32's MLP), by
tatr_core's Gram route, by a randomized range finder (torch.svd_lowrank, 10 oversamples, 2 and 6 power
iterations) and by a full float32 SVD: milliseconds, and the rank-96 truncation's error against float64 SVD's.
The matrix is built as bench/tsv_speed.py builds task matrices: a rank-4 update plus small dense noise.

    .venv/bin/python bench/tsv_lowrank.py
"""
import time, torch, sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from tatr_core import linalg
torch.manual_seed(0); torch.set_num_threads(2)
m, n, p = 3072, 768, 96
u = torch.linalg.qr(torch.randn(m, 4))[0]; v = torch.linalg.qr(torch.randn(n, 4))[0]
a = (u * torch.tensor([3., 2., 1.5, 1.])) @ v.T * 0.05 + 1e-3 * torch.randn(m, n)
ref = torch.linalg.svd(a.double(), full_matrices=False)
def err(U, S, V):
    approx = (U.double() * S.double()) @ V.double().T
    want = (ref.U[:, :p] * ref.S[:p]) @ ref.Vh[:p]
    return float((approx - want).norm() / want.norm())
for name, fn in [("gram route (tatr_core)", lambda: linalg.top_singular(a, p)),
                 ("svd_lowrank q=p+10, niter=2", lambda: torch.svd_lowrank(a, q=p + 10, niter=2)),
                 ("svd_lowrank q=p+10, niter=6", lambda: torch.svd_lowrank(a, q=p + 10, niter=6)),
                 ("full float32 svd", lambda: torch.linalg.svd(a, full_matrices=False))]:
    fn(); t = time.perf_counter()
    for _ in range(3): out = fn()
    dt = (time.perf_counter() - t) / 3
    if name.startswith("full"):
        U, S, Vh = out; U, S, V = U[:, :p], S[:p], Vh[:p].T
    elif name.startswith("svd_lowrank"):
        U, S, V = out; U, S, V = U[:, :p], S[:p], V[:, :p]
    else:
        U, S, V = out
        if V.shape[0] != n: V = V.T
        if U.shape[0] != m: U = U.T
    print(f"{name}: {dt*1000:.0f} ms, rank-{p} truncation error {err(U, S, V):.1e}")
