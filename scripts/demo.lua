-- metastep demo: tune the step size of gradient descent on a quadratic by
-- meta-gradient descent on the log meta-objective G(eta) = (1/T) log f(w_T),
-- differentiating through the whole unroll with the tape.
-- Usage: metastep scripts/demo.lua [T] [meta_steps]
local ms = require "metastep"

if arg and (arg[1] == "--help" or arg[1] == "-h") then
  print([[
usage: metastep scripts/demo.lua [T] [meta_steps]
Tunes the step size of GD on a quadratic by meta-gradient descent on (1/T) log f(w_T),
differentiating through the unroll with the tape.
  T            unroll length (default: 40)
  meta_steps   meta-gradient steps (default: 300)
  --help       print this help and exit]])
  os.exit(0)
end
local T = tonumber(arg and arg[1]) or 40
local meta_steps = tonumber(arg and arg[2]) or 300
local d = 10

-- H = Q diag(lambda) Q^T with eigenvalues spread over [1, 10] and a random rotation.
local lambda = ms.linspace(1, 10, d)
local Q = ms.qr(ms.randn({d, d}, {seed = 7}))
local H = ms.matmul(ms.matmul(Q, ms.diag(lambda)), Q:t())
local w0 = ms.randn({d}, {seed = 8})

local function f(w) return ms.dot(w, ms.matvec(H, w)) * 0.5 end
local grad_f = ms.grad(f)

-- G(eta): unroll T steps of w <- w - eta * grad f(w), then (1/T) log f(w_T).
local function G(eta)
  local w = w0
  for _ = 1, T do w = w - grad_f(w) * eta end
  return ms.log(f(w)) / T
end

local eta = 0.01
print(("T = %d, eigenvalues in [1, 10]; the best step for large T is near 2/(1+10) = %.4f"):format(T, 2 / 11))
print(" k        eta           G(eta)       G'(eta)")
for k = 1, meta_steps do
  local value, g = ms.value_and_grad(G)(eta)
  if k == 1 or k % 50 == 0 or k == meta_steps then
    print(("%3d  %10.6f  %14.8f  %12.6f"):format(k, eta, value:item(), g))
  end
  eta = math.max(0, eta - g * 0.01 / math.sqrt(k)) -- meta step 1/(100 sqrt k), as in the paper
end
print(("learned eta = %.5f"):format(eta))
