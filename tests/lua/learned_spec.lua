-- Learned optimizers through the Lua API (lua/src/lms_learned.c, lua/metastep/optim.lua):
-- constructors and their parameters, meta-gradients through an unroll (reverse against the fd
-- method), a continued meta-training run (segments), save and load, and the errors at the
-- boundary with their exact messages.
local ms = require "metastep"
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")
local err_of = h.err_of

-- a small logistic regression task (labels from a fixed direction)
local function logistic(n, d, seed)
  ms.seed(seed)
  local X = ms.randn({n, d})
  local dir = ms.tensor{1, -1, 0.5, 0, 2}
  local y = ms.gt(ms.matvec(X, dir), 0)
  return ms.objective.logistic(X, y)
end

describe("learned optimizers", function()
  it("have the documented meta-parameters", function()
    local mlp = ms.optim.learned_mlp{seed = 1, hidden = 8}
    assert.are.equal("learned_mlp", mlp.name)
    assert.are.same({"w1", "w1t", "b1", "w2", "b2"}, mlp.params)
    assert.are.same({22, 8}, mlp.theta.w1:shape())
    assert.are.same({11, 8}, mlp.theta.w1t:shape())
    assert.are.same({8, 2}, mlp.theta.w2:shape())
    assert.are.equal(8, mlp.options.hidden)
    assert.are.equal(0.001, mlp.options.step_scale)
    local lstm = ms.optim.learned_lstm{seed = 1, hidden = 5}
    assert.are.same({"wx1", "wh1", "b1", "wx2", "wh2", "b2", "wout", "bout"}, lstm.params)
    assert.are.same({2, 20}, lstm.theta.wx1:shape())
    assert.are.same({5, 20}, lstm.theta.wx2:shape())
    local one = ms.optim.learned_lstm{hidden = 5, layers = 1}
    assert.are.same({"wx1", "wh1", "b1", "wout", "bout"}, one.params)
  end)

  it("the same seed gives the same theta, another seed another one", function()
    local a, b = ms.optim.learned_mlp{seed = 3}, ms.optim.learned_mlp{seed = 3}
    local c = ms.optim.learned_mlp{seed = 4}
    assert.are.equal(0, ms.max_abs_diff(a.theta.w1, b.theta.w1))
    assert.is_true(ms.max_abs_diff(a.theta.w1, c.theta.w1) > 0)
  end)

  it("meta-gradients through an unroll agree with finite differences", function()
    local obj, valid = logistic(30, 5, 1), logistic(30, 5, 2)
    for _, opt in ipairs{ms.optim.learned_mlp{seed = 2, hidden = 4, step_scale = 0.05},
                         ms.optim.learned_lstm{seed = 2, hidden = 3, layers = 1}} do
      local spec = {task = {objective = obj, valid_objective = valid}, optimizer = opt, steps = 3,
                    meta = "valid_log"}
      local r = ms.meta.value_and_grad(spec)
      spec.method, spec.fd_step = "fd", 1e-4
      local f = ms.meta.value_and_grad(spec)
      assert.are.equal("ok", r.status)
      for _, name in ipairs(opt.params) do
        local scale = math.max(ms.max(ms.abs(f.grad[name])):item(), 1e-8)
        assert.is_true(ms.max_abs_diff(r.grad[name], f.grad[name]) <= 1e-6 * scale,
                       opt.name .. " " .. name)
      end
    end
  end)

  it("trains an MLP on synthetic images with mini-batches (the loss falls over the unroll)", function()
    local images, labels = ms.data.synthetic{seed = 1, n = 200, side = 6, classes = 4}
    local layers = {36, 8, 4}
    local obj = ms.objective.mlp{layers = layers, X = images, y = labels}
    local w0 = ms.nn.mlp_init(layers, {seed = 1})
    local opt = ms.optim.learned_mlp{seed = 0, batch = 16, batch_seed = 5}
    local traj = ms.meta.unroll{objective = obj, optimizer = opt, w0 = w0, steps = 60}
    assert.are.equal("ok", traj.status)
    assert.is_true(traj.losses[60]:item() < 0.9 * traj.loss0:item())
  end)

  it("meta.unroll continues a run from a trajectory's stop, bit for bit", function()
    local images, labels = ms.data.synthetic{seed = 2, n = 100, side = 5, classes = 3}
    local layers = {25, 6, 3}
    local obj = ms.objective.mlp{layers = layers, X = images, y = labels}
    local w0 = ms.nn.mlp_init(layers, {seed = 2})
    local opt = ms.optim.learned_mlp{seed = 1, batch = 8, batch_seed = 3}
    local whole = ms.meta.unroll{objective = obj, optimizer = opt, w0 = w0, steps = 9}
    local first = ms.meta.unroll{objective = obj, optimizer = opt, w0 = w0, steps = 4}
    local rest = ms.meta.unroll{objective = obj, optimizer = opt, w0 = w0, steps = 5, start = first.stop}
    assert.are.equal(4, first.stop.t)
    assert.are.equal(9, rest.stop.t)
    assert.are.equal(0, ms.max_abs_diff(whole.w_T, rest.w_T))
    assert.are.equal(whole.losses[9]:item(), rest.losses[5]:item())
    assert.are.equal("meta: 'start' applies to meta.unroll only",
                     err_of(ms.meta.value_and_grad, {objective = obj, optimizer = opt, w0 = w0, steps = 2,
                                                     start = first.stop}))
  end)

  it("meta.train continues runs over segments", function()
    local obj = logistic(40, 5, 3)
    local opt = ms.optim.learned_mlp{seed = 1, hidden = 4}
    -- meta_lr = 0: theta stays, so the values are f(w_2), f(w_4), f(w_6) of one run, then f(w_2)
    local r = ms.meta.train{objective = obj, optimizer = opt, steps = 2, meta = "naive", iterations = 4,
                            meta_lr = 0, segments = 3, progress = false}
    local traj = ms.meta.unroll{objective = obj, optimizer = opt, steps = 6}
    assert.are.equal(traj.losses[2]:item(), r.history[1].value)
    assert.are.equal(traj.losses[4]:item(), r.history[2].value)
    assert.are.equal(traj.losses[6]:item(), r.history[3].value)
    assert.are.equal(traj.losses[2]:item(), r.history[4].value)
    assert.are.equal("meta.train: option 'segments' must be an integer >= 1, got 0",
                     err_of(ms.meta.train, {objective = obj, optimizer = opt, steps = 2, segments = 0}))
  end)

  it("save and load round trip bit for bit", function()
    local path = os.tmpname()
    local opt = ms.optim.learned_mlp{seed = 5, hidden = 6, step_scale = 0.01}
    local theta = {}
    for _, name in ipairs(opt.params) do theta[name] = opt.theta[name] + 0.25 end
    assert.is_true(opt:save(path, theta))
    local back = ms.optim.load(path)
    assert.are.equal("learned_mlp", back.name)
    assert.are.equal(0.01, back.options.step_scale)
    for _, name in ipairs(opt.params) do
      assert.are.equal(0, ms.max_abs_diff(back.theta[name], theta[name]))
    end
    local lstm = ms.optim.learned_lstm{seed = 5, hidden = 3}
    assert.is_true(lstm:save(path))
    assert.are.equal(0, ms.max_abs_diff(ms.optim.load(path).theta.wh2, lstm.theta.wh2))
    os.remove(path)
    local none, msg = ms.optim.load(path)
    assert.is_nil(none)
    assert.are.equal("ms_archive_load: cannot open '" .. path .. "': No such file or directory", msg)
    local ok, wmsg = opt:save("/nonexistent-dir/x.msa")
    assert.is_nil(ok)
    assert.is_truthy(wmsg:find("/nonexistent-dir/x.msa", 1, true))
  end)

  it("refuses bad options with exact messages", function()
    assert.are.equal("optim.learned_mlp: unknown option 'layers' (expected seed, hidden, step_scale, "
                       .. "exp_scale, batch, batch_seed, theta)",
                     err_of(ms.optim.learned_mlp, {layers = 2}))
    assert.are.equal("optim.learned_mlp: option 'hidden' must be in [2, 4096], got 1",
                     err_of(ms.optim.learned_mlp, {hidden = 1}))
    assert.are.equal("optim.learned_lstm: option 'layers' must be in [1, 2], got 3",
                     err_of(ms.optim.learned_lstm, {layers = 3}))
    assert.are.equal("optim.learned_mlp: option 'step_scale' must be > 0, got -1",
                     err_of(ms.optim.learned_mlp, {step_scale = -1}))
    assert.are.equal("optim.learned_mlp: option 'theta' needs a tensor 'w1', got nil",
                     err_of(ms.optim.learned_mlp, {theta = {}}))
    assert.are.equal("optim.learned_mlp: meta-parameter 'w1' must have shape [22,32], got [2,2]",
                     err_of(ms.optim.learned_mlp, {theta = {w1 = ms.zeros{2, 2}, w1t = ms.zeros{11, 32},
                       b1 = ms.zeros{32}, w2 = ms.zeros{32, 2}, b2 = ms.zeros{2}}}))
    assert.are.equal("optim.load: path must be a string, got number", err_of(ms.optim.load, 3))
  end)
end)
