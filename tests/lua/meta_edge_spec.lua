-- Edge cases of the learning-to-learn layer found in review: each asserts a value from a
-- closed form or an independent computation.
local ms = require "metastep"

local function quad(rows) return ms.objective.quadratic(ms.tensor(rows)) end

-- At lr = 0.1, ms.meta.value_and_grad(make(m)) for each method m must give status "ok", the
-- value F(0.1) to value_tol and d/dlr to 1e-6 relative to F's central difference (step 1e-6).
local function check_methods(methods, F, value_tol, make)
  local want = (F(0.1 + 1e-6) - F(0.1 - 1e-6)) / 2e-6
  for _, m in ipairs(methods) do
    local r = ms.meta.value_and_grad(make(m))
    assert.are.equal("ok", r.status)
    assert.is_true(math.abs(r.value - F(0.1)) < value_tol, m)
    assert.is_true(math.abs(r.grad.lr - want) < 1e-6 * math.abs(want), m)
  end
end

describe("meta-objectives at the edges", function()
  it("logsum works for long unrolls in reverse and forward mode (no cat arity limit)", function()
    -- H = [2], w0 = 1, lr = 0.1: f(w_t) = (0.8)^(2t); L = (1/T) log sum_t f_t
    local T = 200
    local function L(lr)
      local s = 0
      for t = 1, T do s = s + (1 - 2 * lr) ^ (2 * t) end
      return math.log(s) / T
    end
    check_methods({"reverse", "forward", "stable"}, L, 1e-10, function(m)
      return {objective = quad{{2}}, w0 = ms.tensor{1}, optimizer = ms.optim.gd{lr = 0.1}, steps = T,
              meta = "logsum", method = m}
    end)
  end)

  it("a loss that reaches exactly zero is fine for the naive and sum objectives", function()
    -- H = [2], lr = 0.5 jumps to the minimum in one step: f(w_1) = 0 = f(w_t) for t >= 1
    local spec = {objective = quad{{2}}, w0 = ms.tensor{1}, optimizer = ms.optim.gd{lr = 0.5},
                  steps = 3, meta = "sum", method = "reverse"}
    local r = ms.meta.value_and_grad(spec)
    assert.are.equal("ok", r.status)
    assert.are.equal(0, r.value)
    -- d/dlr sum_t (1 - 2 lr)^(2t) at lr = 1/2 is 0 (every term has a double root)
    assert.are.equal(0, r.grad.lr)
    spec.meta = "log"
    assert.are.equal("underflow", ms.meta.value_and_grad(spec).status)
  end)

  it("stable and exact refuse an indefinite H; fd falls back to the plain unroll", function()
    local obj = quad{{1, 0}, {0, -0.5}}
    local spec = {objective = obj, w0 = ms.tensor{1, 1}, optimizer = ms.optim.gd{lr = 0.1}, steps = 10,
                  meta = "naive"}
    spec.method = "stable"
    assert.has_error(function() ms.meta.value_and_grad(spec) end)
    local ok, msg = pcall(ms.meta.value_and_grad, spec)
    assert.is_false(ok)
    assert.truthy(msg:find("positive semi-definite", 1, true))
    -- f(w_10) = 1/2 (0.9^20 - 0.5 * 1.05^20); independent derivative by hand
    local function F(lr) return 0.5 * ((1 - lr) ^ 20 - 0.5 * (1 + 0.5 * lr) ^ 20) end
    check_methods({"reverse", "fd"}, F, 1e-12, function(m)
      spec.method = m
      return spec
    end)
  end)

  it("fd works at lr = 0 with a one-sided stencil", function()
    -- H = [2], w0 = 1: G(lr) = (1/T) log((1 - 2 lr)^(2T)) = 2 log(1 - 2 lr); G'(0) = -4
    local r = ms.meta.value_and_grad{objective = quad{{2}}, w0 = ms.tensor{1}, optimizer = ms.optim.gd{lr = 0},
                                     steps = 5, meta = "log", method = "fd"}
    assert.are.equal("ok", r.status)
    assert.is_true(math.abs(r.grad.lr + 4) < 1e-8)
  end)

  it("adam gives a finite meta-gradient when a gradient coordinate is exactly zero", function()
    local spec = {objective = quad{{2, 0}, {0, 1}}, w0 = ms.tensor{1, 0}, optimizer = ms.optim.adam{lr = 0.05},
                  steps = 5, meta = "log"}
    spec.method = "reverse"
    local rr = ms.meta.value_and_grad(spec)
    spec.method = "fd"
    local rf = ms.meta.value_and_grad(spec)
    assert.are.equal("ok", rr.status)
    assert.is_true(math.abs(rr.grad.lr - rf.grad.lr) < 1e-6 * math.abs(rf.grad.lr))
  end)

  it("meta.train keeps momentum's beta >= 0 by default", function()
    local run = ms.meta.train{objective = quad{{1, 0}, {0, 1}}, w0 = ms.tensor{1, 1},
                              optimizer = ms.optim.momentum{lr = 1.0, beta = 0.3}, steps = 5, meta = "log",
                              method = "stable", meta_lr = 1, schedule = "constant", iterations = 5,
                              progress = false}
    assert.is_true(run.theta.beta >= 0)
  end)

  it("grad refuses a function that returns a Lua number", function()
    local ok, msg = pcall(ms.grad(function(x) return x:sum():item() ^ 2 end), ms.ones(2))
    assert.is_false(ok)
    assert.truthy(msg:find("returned a Lua number", 1, true))
  end)
end)

describe("allclose", function()
  it("never calls a NaN close and tells infinities of opposite sign apart", function()
    assert.is_false(ms.allclose(ms.tensor{0 / 0}, ms.tensor{1}))
    assert.is_false(ms.allclose(ms.tensor{0 / 0}, ms.tensor{0 / 0}))
    assert.is_false(ms.allclose(ms.tensor{1 / 0, 2}, ms.tensor{-1 / 0, 2}))
    assert.is_true(ms.allclose(ms.tensor{1 / 0, 2}, ms.tensor{1 / 0, 2}))
    assert.is_true(ms.allclose(ms.tensor{1, 2}, ms.tensor{1, 2 + 1e-12}))
  end)
end)
