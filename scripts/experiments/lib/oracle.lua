--- The plain-Lua oracle shared by the experiments and tests/lua/meta_spec.lua: the closed form
-- of gradient descent on a quadratic f(w) = ½ wᵀHw, written once, in log space, so it holds
-- for any unroll length T. With H = Q diag(λ) Qᵀ and c = Qᵀw₀,
--   log f(w_T) = logsumexp_i [log(½λ_i c_i²) + 2T log|1 − ηλ_i|]
--   G(η) = log f(w_T) / T,   G'(η) = Σ_i p_i (−2λ_i / (1 − ηλ_i))   (p = softmax of the terms)
--   log|F'(η)| = log f(w_T) + log(T |G'(η)|)                         (F = f(w_T) = exp(T·G))
-- It needs no metastep code except where it says so (paper_quadratic builds H with ms), so
-- a check against it does not rest on the code under test: the eigendecomposition is a
-- cyclic Jacobi written here.
local M = {}

--- log Σ exp(x_i), exact at ±inf (returns the maximum when it is infinite).
function M.logsumexp(xs)
  local m = -math.huge
  for _, x in ipairs(xs) do if x > m then m = x end end
  if m == -math.huge or m == math.huge then return m end
  local s = 0
  for _, x in ipairs(xs) do s = s + math.exp(x - m) end
  return m + math.log(s)
end

--- Cyclic Jacobi eigendecomposition of a symmetric matrix given as a table of rows.
-- Returns the eigenvalues (ascending) and V with V[i][k] = component i of eigenvector k.
function M.jacobi_eigen(A)
  local n = #A
  local a, V = {}, {}
  for i = 1, n do
    a[i], V[i] = {}, {}
    for j = 1, n do a[i][j], V[i][j] = A[i][j], i == j and 1 or 0 end
  end
  local function rotate(rows, p, q, c, s, by_column)
    for k = 1, n do
      if by_column then
        local xp, xq = rows[k][p], rows[k][q]
        rows[k][p], rows[k][q] = c * xp - s * xq, s * xp + c * xq
      else
        local xp, xq = rows[p][k], rows[q][k]
        rows[p][k], rows[q][k] = c * xp - s * xq, s * xp + c * xq
      end
    end
  end
  for _ = 1, 100 do
    local off, total = 0, 0
    for i = 1, n do
      for j = 1, n do
        total = total + a[i][j] ^ 2
        if i ~= j then off = off + a[i][j] ^ 2 end
      end
    end
    if off <= 1e-32 * total then break end
    for p = 1, n - 1 do
      for q = p + 1, n do
        local apq = a[p][q]
        if apq ~= 0 then
          local theta = (a[q][q] - a[p][p]) / (2 * apq)
          local t = (theta >= 0 and 1 or -1) / (math.abs(theta) + math.sqrt(theta * theta + 1))
          local c = 1 / math.sqrt(t * t + 1)
          local s = t * c
          rotate(a, p, q, c, s, true)  -- A <- A P
          rotate(a, p, q, c, s, false) -- A <- P^T A
          rotate(V, p, q, c, s, true)  -- V <- V P
        end
      end
    end
  end
  local order = {}
  for i = 1, n do order[i] = i end
  table.sort(order, function(x, y) return a[x][x] < a[y][y] end)
  local lam, Vs = {}, {}
  for k, i in ipairs(order) do lam[k] = a[i][i] end
  for r = 1, n do
    Vs[r] = {}
    for k, i in ipairs(order) do Vs[r][k] = V[r][i] end
  end
  return lam, Vs
end

--- The spectrum data of (H, w₀) from eigenvalues lam (ascending) and coordinates c = Qᵀw₀:
-- {lam, c, loga} with loga[i] = log(½λ_i c_i²).
function M.spectrum(lam, c)
  local loga = {}
  for i = 1, #lam do loga[i] = math.log(0.5 * lam[i] * c[i] ^ 2) end
  return {lam = lam, c = c, loga = loga}
end

--- The spectrum of a symmetric matrix H and a point w₀ (tables, or tensors with :totable()),
-- by this module's Jacobi. Returns the spectrum and the eigenvectors V (columns).
function M.eigencoords(H, w0)
  if type(H) ~= "table" or getmetatable(H) then H = H:totable() end
  if type(w0) ~= "table" or getmetatable(w0) then w0 = w0:totable() end
  local lam, V = M.jacobi_eigen(H)
  local c = {}
  for k = 1, #lam do
    local s = 0
    for i = 1, #lam do s = s + V[i][k] * w0[i] end
    c[k] = s
  end
  return M.spectrum(lam, c), V
end

--- The terms log(½λ_i c_i²) + 2T log|1 − ηλ_i| (−inf for a direction GD solves exactly;
-- at T = 0 the terms of w₀ itself).
function M.log_terms(sp, eta, T)
  local terms = {}
  for i, l in ipairs(sp.lam) do
    terms[i] = T == 0 and sp.loga[i] or sp.loga[i] + 2 * T * math.log(math.abs(1 - eta * l))
  end
  return terms
end

--- log f(w_T) after T steps of GD with step size eta (t = 0 gives log f(w₀)).
function M.log_f(sp, eta, T)
  return M.logsumexp(M.log_terms(sp, eta, T))
end

--- The log meta-objective G(η) = log f(w_T) / T.
function M.G(sp, eta, T)
  return M.log_f(sp, eta, T) / T
end

--- log f(w_T), G'(η) and log|F'(η)| of the naive meta-objective, as {logf, dG, log_abs_dF}.
function M.closed_form(sp, eta, T)
  local terms = M.log_terms(sp, eta, T)
  local logf = M.logsumexp(terms)
  local g = 0
  for i, l in ipairs(sp.lam) do
    -- p_i carries (1 − ηλ_i)^(2T): a zero weight on a solved direction contributes nothing
    local p = math.exp(terms[i] - logf)
    if p > 0 then g = g + p * (-2 * l / (1 - eta * l)) end
  end
  return {logf = logf, dG = g, log_abs_dF = logf + math.log(T * math.abs(g))}
end

--- G'(η) alone.
function M.dG(sp, eta, T)
  return M.closed_form(sp, eta, T).dG
end

--- max_i |1 − ηλ_i|: |F'| grows or shrinks like its 2T-th power.
function M.rho(sp, eta)
  local r = 0
  for _, l in ipairs(sp.lam) do r = math.max(r, math.abs(1 - eta * l)) end
  return r
end

--- The global minimiser of G(·, T) over η in (0, 4/λmax]: a uniform grid of n points, then
-- golden-section search between the neighbours of the best one. Returns η, G(η) and whether
-- the best grid point was the grid's last (the minimum may lie beyond it).
function M.grid_optimum(sp, T, n)
  local hi = 4 / sp.lam[#sp.lam]
  local best, bi = math.huge, 1
  for i = 1, n do
    local v = M.G(sp, hi * i / n, T)
    if v < best then best, bi = v, i end
  end
  local a, b = hi * (bi - 1) / n, hi * (bi + 1) / n
  local phi = (math.sqrt(5) - 1) / 2
  local x1, x2 = b - phi * (b - a), a + phi * (b - a)
  local f1, f2 = M.G(sp, x1, T), M.G(sp, x2, T)
  for _ = 1, 100 do
    if f1 <= f2 then
      b, x2, f2 = x2, x1, f1
      x1 = b - phi * (b - a)
      f1 = M.G(sp, x1, T)
    else
      a, x1, f1 = x1, x2, f2
      x2 = a + phi * (b - a)
      f2 = M.G(sp, x2, T)
    end
  end
  local eta = (a + b) / 2
  return eta, M.G(sp, eta, T), bi == n
end

--- The paper's quadratic: H = XᵀX with X a d×d standard Gaussian matrix drawn by ms.randn
-- with the given seed, symmetrized exactly.
function M.paper_quadratic(ms, d, seed)
  local X = ms.randn({d, d}, {seed = seed})
  local H = ms.matmul(X:t(), X)
  return (H + H:t()) * 0.5
end

return M
