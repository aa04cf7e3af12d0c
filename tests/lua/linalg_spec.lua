-- Linear algebra checked against values built or verified in plain Lua: eigenvalues of
-- Q diag(l) Q^T for an explicit rotation Q, residuals of solves, triple-loop products.
local ms = require "metastep"

-- ---- plain Lua matrices (tables of rows) ----

local function lmat(n, m, f)
  local a = {}
  for i = 1, n do
    a[i] = {}
    for j = 1, m do a[i][j] = f(i, j) end
  end
  return a
end

local function lmul(a, b)
  local n, k, m = #a, #b, #b[1]
  return lmat(n, m, function(i, j)
    local s = 0
    for p = 1, k do s = s + a[i][p] * b[p][j] end
    return s
  end)
end

local function ltranspose(a)
  return lmat(#a[1], #a, function(i, j) return a[j][i] end)
end

local function lidentity(n) return lmat(n, n, function(i, j) return i == j and 1 or 0 end) end

-- A + c I, in place; returns A.
local function add_diagonal(A, c)
  for i = 1, #A do A[i][i] = A[i][i] + c end
  return A
end

local function lrandom(n, m) return lmat(n, m, function() return math.random() * 2 - 1 end) end

local function max_abs_diff(a, b)
  local d = 0
  if type(a) == "number" then return math.abs(a - b) end
  assert.are.equal(#a, #b)
  for i = 1, #a do d = math.max(d, max_abs_diff(a[i], b[i])) end
  return d
end

-- Givens rotation in the (p, q) plane of n-space.
local function givens(n, p, q, theta)
  local g = lidentity(n)
  local c, s = math.cos(theta), math.sin(theta)
  g[p][p], g[q][q], g[p][q], g[q][p] = c, c, -s, s
  return g
end

-- An explicit orthogonal matrix: a product of rotations over every plane.
local function rotation(n)
  local q = lidentity(n)
  local k = 0
  for p = 1, n - 1 do
    for r = p + 1, n do
      k = k + 1
      q = lmul(q, givens(n, p, r, 0.3 + 0.7 * k))
    end
  end
  return q
end

local function lvec_col(v) local c = {} for i = 1, #v do c[i] = {v[i]} end return c end

describe("eigh", function()
  local l = {-2, 0.5, 1, 3, 7.25}
  local n = #l
  local Q = rotation(n)
  local A = lmul(lmul(Q, lmat(n, n, function(i, j) return i == j and l[i] or 0 end)), ltranspose(Q))
  -- symmetrize exactly so the lower and upper triangles agree bit for bit
  for i = 1, n do for j = i + 1, n do A[j][i] = A[i][j] end end

  it("recovers the eigenvalues of Q diag(l) Q^T to 1e-12, ascending", function()
    local w = ms.eigh(ms.tensor(A))
    assert.are.same({n}, w:shape())
    assert.is_true(max_abs_diff(l, w:totable()) <= 1e-12, "eigenvalues " .. table.concat(w:totable(), " "))
  end)

  it("returns orthonormal eigenvectors matching Q's columns up to sign", function()
    local w, V = ms.eigh(ms.tensor(A))
    local v = V:totable()
    assert.is_true(max_abs_diff(lidentity(n), lmul(ltranspose(v), v)) <= 1e-12)
    -- A v_i = w_i v_i
    local wt = w:totable()
    local av = lmul(A, v)
    assert.is_true(max_abs_diff(av, lmat(n, n, function(i, j) return v[i][j] * wt[j] end)) <= 1e-12)
    for j = 1, n do
      local dot = 0
      for i = 1, n do dot = dot + v[i][j] * Q[i][j] end
      assert.is_true(math.abs(math.abs(dot) - 1) <= 1e-12, "column " .. j)
    end
  end)

  it("refuses a non-symmetric matrix, naming the largest asymmetry (eigh and cholesky)", function()
    -- LAPACK would read one triangle only and answer for another matrix
    local B = ms.tensor{{2, 100, 0}, {1, 2, 0}, {0, 0.5, 3}}
    local ok, err = pcall(ms.eigh, B)
    assert.is_false(ok)
    assert.are.equal("eigh: a must be symmetric, max |a - a^T| = 99 at a[1,2] "
      .. "(tolerance 1e-10 * max|a| = 1e-08)", (err:gsub("^[^:]+:%d+: ", "")))
    ok, err = pcall(ms.cholesky, B:t())
    assert.is_false(ok)
    assert.is_truthy(err:find("cholesky: a must be symmetric, max |a - a^T| = 99 at a[1,2]", 1, true), err)
    -- within the tolerance: accepted, and the answer is the symmetric matrix's
    local S = ms.tensor{{2, 1 + 1e-11}, {1, 2}}
    assert.is_true(max_abs_diff({1, 3}, ms.eigh(S):totable()) <= 1e-10)
  end)

  it("handles a transposed view and the empty matrix", function()
    local w = ms.eigh(ms.tensor(A):t())
    assert.is_true(max_abs_diff(l, w:totable()) <= 1e-12)
    local w0, v0 = ms.eigh(ms.zeros(0, 0))
    assert.are.same({0}, w0:shape())
    assert.are.same({0, 0}, v0:shape())
  end)
end)

describe("solve", function()
  math.randomseed(17)
  local n = 6
  local A = add_diagonal(lrandom(n, n), n) -- well conditioned
  local b = {}
  for i = 1, n do b[i] = math.random() * 10 - 5 end

  it("gives a vector whose residual A x - b is below 1e-12", function()
    local x = ms.solve(ms.tensor(A), ms.tensor(b))
    assert.are.same({n}, x:shape())
    local ax = lmul(A, lvec_col(x:totable()))
    for i = 1, n do assert.is_true(math.abs(ax[i][1] - b[i]) <= 1e-12, "row " .. i) end
  end)

  it("solves several right-hand sides at once", function()
    local B = lrandom(n, 3)
    local X = ms.linalg.solve(ms.tensor(A), ms.tensor(B)):totable()
    assert.is_true(max_abs_diff(B, lmul(A, X)) <= 1e-12)
  end)

  it("accepts strided inputs", function()
    local At = ltranspose(A)
    local x = ms.solve(ms.tensor(At):t(), ms.tensor{b}:t():select(2, 1))
    local ax = lmul(A, lvec_col(x:totable()))
    for i = 1, n do assert.is_true(math.abs(ax[i][1] - b[i]) <= 1e-12) end
  end)

  it("reports singular matrices", function()
    assert.has_error(function() ms.solve(ms.tensor{{1, 2}, {2, 4}}, ms.tensor{1, 1}) end,
      "solve: matrix is singular (U[2,2] = 0)")
  end)
end)

describe("products", function()
  math.randomseed(23)

  it("matmul matches a Lua triple loop on random data", function()
    local a, b = lrandom(5, 7), lrandom(7, 3)
    local r = ms.matmul(ms.tensor(a), ms.tensor(b))
    assert.are.same({5, 3}, r:shape())
    assert.is_true(max_abs_diff(lmul(a, b), r:totable()) <= 1e-14)
  end)

  it("matmul handles transposed, sliced and expanded operands", function()
    local a, b = lrandom(4, 6), lrandom(4, 5)
    local expected = lmul(ltranspose(a), b) -- [6,5]
    local r = ms.tensor(a):t():matmul(ms.tensor(b))
    assert.is_true(max_abs_diff(expected, r:totable()) <= 1e-14)
    -- a column slice: row-major with a padded leading dimension
    local wide = ms.tensor(lrandom(6, 9))
    local s = wide:slice(2, 2, 5) -- [6,4]
    assert.is_true(max_abs_diff(lmul(s:totable(), a), (s:matmul(ms.tensor(a))):totable()) <= 1e-14)
    -- rows that repeat (stride 0)
    local e = ms.tensor{{1, 2, 3, 4}}:expand{3, 4}
    assert.is_true(max_abs_diff(lmul(e:totable(), a), ms.matmul(e, ms.tensor(a)):totable()) <= 1e-14)
  end)

  it("matmul promotes vectors as NumPy does", function()
    local a = lrandom(3, 4)
    local v4, v3 = {1, 2, 3, 4}, {5, 6, 7}
    local av = ms.matmul(ms.tensor(a), ms.tensor(v4)):totable()
    local expected = lmul(a, lvec_col(v4))
    for i = 1, 3 do assert.is_true(math.abs(expected[i][1] - av[i]) <= 1e-14) end
    local va = ms.matmul(ms.tensor(v3), ms.tensor(a)):totable()
    local expected2 = lmul({v3}, a)[1]
    assert.is_true(max_abs_diff(expected2, va) <= 1e-14)
    local vv = ms.matmul(ms.tensor(v4), ms.tensor(v4))
    assert.are.same({}, vv:shape())
    assert.are.equal(30, vv:item())
  end)

  it("matvec, dot and outer match Lua", function()
    local a, x = lrandom(4, 3), {0.5, -1, 2}
    local y = ms.matvec(ms.tensor(a), ms.tensor(x)):totable()
    for i = 1, 4 do
      assert.is_true(math.abs(a[i][1] * 0.5 - a[i][2] + 2 * a[i][3] - y[i]) <= 1e-15)
    end
    assert.are.equal(1 * 4 + 2 * 5 + 3 * 6, ms.dot(ms.tensor{1, 2, 3}, ms.tensor{4, 5, 6}):item())
    assert.are.equal(32, ms.tensor{1, 2, 3}:dot(ms.tensor{4, 5, 6}):item())
    assert.are.same({{4, 5}, {8, 10}, {12, 15}}, ms.outer(ms.tensor{1, 2, 3}, ms.tensor{4, 5}):totable())
    -- strided vectors
    local m = ms.tensor{{1, 2}, {3, 4}, {5, 6}}
    assert.are.equal(2 * 1 + 4 * 3 + 6 * 5, ms.dot(m:select(2, 2), m:select(2, 1)):item())
  end)

  it("gives zeros for empty inner dimensions", function()
    assert.are.same({{0, 0}, {0, 0}}, ms.matmul(ms.zeros(2, 0), ms.zeros(0, 2)):totable())
    assert.are.same({0, 0, 0}, ms.matvec(ms.zeros(3, 0), ms.zeros(0)):totable())
    assert.are.equal(0, ms.dot(ms.zeros(0), ms.zeros(0)):item())
  end)
end)

describe("factorizations", function()
  math.randomseed(31)
  local n = 5
  local M = lrandom(n, n)
  local S = add_diagonal(lmul(M, ltranspose(M)), n) -- symmetric positive definite

  it("cholesky gives lower-triangular L with L L^T = A", function()
    local L = ms.cholesky(ms.tensor(S)):totable()
    for i = 1, n do for j = i + 1, n do assert.are.equal(0, L[i][j]) end end
    for i = 1, n do assert.is_true(L[i][i] > 0) end
    assert.is_true(max_abs_diff(S, lmul(L, ltranspose(L))) <= 1e-12)
  end)

  it("cholesky reports matrices that are not positive definite", function()
    assert.has_error(function() ms.cholesky(ms.tensor{{1, 2}, {2, 1}}) end,
      "cholesky: matrix is not positive definite (leading minor 2)")
  end)

  it("inv gives A A^-1 = I", function()
    local Ainv = ms.inv(ms.tensor(S)):totable()
    assert.is_true(max_abs_diff(lidentity(n), lmul(S, Ainv)) <= 1e-12)
    assert.has_error(function() ms.inv(ms.tensor{{1, 2}, {2, 4}}) end, "inv: matrix is singular (U[2,2] = 0)")
  end)

  it("det matches closed forms", function()
    local a = {{2, -1, 0.5}, {1, 3, 2}, {0, 4, -1}}
    local expected = a[1][1] * (a[2][2] * a[3][3] - a[2][3] * a[3][2])
      - a[1][2] * (a[2][1] * a[3][3] - a[2][3] * a[3][1])
      + a[1][3] * (a[2][1] * a[3][2] - a[2][2] * a[3][1])
    assert.is_true(math.abs(expected - ms.det(ms.tensor(a)):item()) <= 1e-13)
    assert.is_true(math.abs(1 - ms.det(ms.tensor(rotation(4))):item()) <= 1e-13)
    assert.are.equal(-1, ms.det(ms.tensor{{0, 1}, {1, 0}}):item())
    assert.are.equal(0, ms.det(ms.tensor{{1, 2}, {2, 4}}):item())
    assert.are.equal(1, ms.det(ms.zeros(0, 0)):item())
  end)

  it("qr gives orthonormal Q and upper-triangular R with Q R = A", function()
    for _, shape in ipairs{{5, 3}, {3, 5}, {4, 4}} do
      local m, k = shape[1], math.min(shape[1], shape[2])
      local A = lrandom(m, shape[2])
      local q, r = ms.qr(ms.tensor(A))
      assert.are.same({m, k}, q:shape())
      assert.are.same({k, shape[2]}, r:shape())
      local Q, R = q:totable(), r:totable()
      for i = 1, k do for j = 1, i - 1 do assert.are.equal(0, R[i][j]) end end
      assert.is_true(max_abs_diff(lidentity(k), lmul(ltranspose(Q), Q)) <= 1e-13)
      assert.is_true(max_abs_diff(A, lmul(Q, R)) <= 1e-13)
    end
  end)

  it("refuses non-finite input", function()
    local bad = ms.tensor{{1, 0}, {0 / 0, 1}}
    for _, name in ipairs{"eigh", "cholesky", "inv", "det", "qr"} do
      local ok, err = pcall(ms[name], bad)
      assert.is_false(ok, name)
      assert.is_truthy(err:find(name .. ": matrix has a non-finite element (nan at", 1, true), err)
    end
  end)
end)

describe("the linalg submodule", function()
  it("exposes the same functions", function()
    for _, name in ipairs{"dot", "matvec", "matmul", "outer", "eigh", "solve", "cholesky", "qr", "inv", "det"} do
      assert.are.equal(ms[name], ms.linalg[name], name)
    end
  end)
end)
