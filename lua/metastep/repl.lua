--- What the `metastep` prompt needs from Lua: values printed readably (tables with nesting and a
-- depth limit, meta-gradient and meta-training results as records) and the candidates of Tab
-- completion (globals, fields, and methods found through a metatable's __index).
local core = require "metastep.core"

local M = {}

local function is_tensor(v) return getmetatable(v) == core.Tensor_mt end

--- Limits of show: nesting depth, entries per table, line width before a table breaks into lines.
M.limits = {depth = 3, items = 20, width = 78}

local IDENT = "^[%a_][%w_]*$"
local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or repeat
  return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

local function scalar(v, top)
  if type(v) == "string" then return top and v or ("%q"):format(v):gsub("\\\n", "\\n") end
  if math.type(v) == "float" then
    if v ~= v then return "nan" end
    return ("%.10g"):format(v):find("[%.eni]") and ("%.10g"):format(v) or ("%.1f"):format(v)
  end
  return tostring(v)
end

local function key_text(k)
  if type(k) == "string" and k:match(IDENT) and not KEYWORDS[k] then return k end
  return "[" .. scalar(k) .. "]"
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta == "number" end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function has_tostring(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__tostring") ~= nil
end

-- A tensor inside a table: its values when small, else its shape.
local function tensor_text(t, nested)
  local ok, shape = pcall(t.shape, t)
  if not ok then return tostring(t) end
  if not nested then return tostring(t) end
  if t:numel() <= 6 and #shape <= 1 then
    local parts = {}
    for i, x in ipairs(#shape == 0 and {t:item()} or t:totable()) do parts[i] = scalar(x + 0.0) end
    return (#shape == 0 and "tensor(%s)" or "tensor{%s}"):format(table.concat(parts, ", "))
  end
  local dims = {}
  for i, n in ipairs(shape) do dims[i] = tostring(n) end
  return ("Tensor[%s]"):format(table.concat(dims, "x"))
end

local show

-- Meta-gradient results (ms.meta.value_and_grad) and meta-training results (ms.meta.train)
-- as aligned "name = value" lines; history is summarised by its first and last records.
local function record_lines(v, indent, seen)
  local rows = {}
  local function add(name, value)
    if value ~= nil then rows[#rows + 1] = {name, value} end
  end
  if v.history ~= nil and v.theta ~= nil then
    add("stopped", v.stopped)
    for _, k in ipairs(M.sorted_keys(v.theta)) do add("theta." .. k, v.theta[k]) end
    add("best_value", v.best_value)
    add("best_k", v.best_k)
    add("history", ("%d records"):format(#v.history))
    if #v.history > 0 then
      local first, last = v.history[1], v.history[#v.history]
      add(("history[%d]"):format(first.k or 1), ("{value = %s, status = %q}"):format(scalar(first.value), first.status))
      if #v.history > 1 then
        add(("history[%d]"):format(#v.history), ("{value = %s, status = %q}"):format(scalar(last.value), last.status))
      end
    end
  else
    add("value", v.value)
    add("status", v.status)
    add("method", v.method)
    add("fail_step", v.fail_step)
    for _, k in ipairs(M.sorted_keys(v.grad)) do add("grad." .. k, v.grad[k]) end
    add("log_loss", v.log_loss)
    for _, k in ipairs(M.sorted_keys(v.log_abs_grad or {})) do add("log_abs_grad." .. k, v.log_abs_grad[k]) end
  end
  local width = 0
  for _, r in ipairs(rows) do width = math.max(width, #r[1]) end
  local out = {}
  for _, r in ipairs(rows) do
    local value = type(r[2]) == "string" and r[2] or show(r[2], 1, seen, indent .. "  ")
    out[#out + 1] = ("%s  %-" .. width .. "s = %s"):format(indent, r[1], value)
  end
  return out
end

--- Is v a result record of ms.meta (value_and_grad or train)?
function M.is_meta_result(v)
  if type(v) ~= "table" or getmetatable(v) ~= nil then return false end
  if type(v.value) == "number" and type(v.status) == "string" and type(v.grad) == "table" then return true end
  return type(v.history) == "table" and type(v.theta) == "table" and type(v.stopped) == "string"
end

--- The keys of t in a stable order (numbers first, then strings).
function M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, key_order)
  return keys
end

-- show(v, depth, seen, indent): the text of v; tables as Lua constructors.
show = function(v, depth, seen, indent)
  local tv = type(v)
  if tv ~= "table" then
    if is_tensor(v) then return tensor_text(v, depth > 0) end
    -- inside a table a function's address says nothing (help(f) says what it is)
    if tv == "function" and depth > 0 then return "function" end
    if tv == "userdata" and has_tostring(v) then return tostring(v) end
    return scalar(v, depth == 0)
  end
  if has_tostring(v) then return tostring(v) end
  if seen[v] then return "<cycle>" end
  if M.is_meta_result(v) then
    seen[v] = true
    local title = v.history and "meta.train result" or "meta result"
    local text = "{ -- " .. title .. "\n" .. table.concat(record_lines(v, indent, seen), "\n") .. "\n" .. indent .. "}"
    seen[v] = nil
    return text
  end
  if next(v) == nil then return "{}" end
  if depth >= M.limits.depth then return "{...}" end
  seen[v] = true
  local n = #v
  local parts, count, total = {}, 0, 0
  for _ in pairs(v) do total = total + 1 end
  for i = 1, n do
    count = count + 1
    if count > M.limits.items then break end
    parts[#parts + 1] = show(v[i], depth + 1, seen, indent .. "  ")
  end
  if count <= M.limits.items then
    for _, k in ipairs(M.sorted_keys(v)) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then
        count = count + 1
        if count > M.limits.items then break end
        parts[#parts + 1] = key_text(k) .. " = " .. show(v[k], depth + 1, seen, indent .. "  ")
      end
    end
  end
  if total > M.limits.items then parts[#parts + 1] = ("... (%d more)"):format(total - M.limits.items) end
  seen[v] = nil
  local one = "{" .. table.concat(parts, ", ") .. "}"
  if #one + #indent <= M.limits.width and not one:find("\n") then return one end
  return "{\n" .. indent .. "  " .. table.concat(parts, ",\n" .. indent .. "  ") .. "\n" .. indent .. "}"
end

--- The text of a value as the prompt prints it: strings as they are, tensors as tostring gives,
-- tables as constructors ({2, 3}, {a = 1}) with nesting up to M.limits.depth, and results of
-- ms.meta calls as records.
function M.show(v)
  return show(v, 0, {}, "")
end

--- Prints its arguments through show, separated by tabs (the prompt's printer).
function M.print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = M.show((select(i, ...))) end
  io.write(table.concat(parts, "\t"), "\n")
  io.flush()
end

-- The fields a value offers after "." (its own keys and its __index table's) or ":" (methods).
local function fields(v, methods_only)
  local out, seen = {}, {}
  local function add_from(t)
    if type(t) ~= "table" then return end
    for k, x in pairs(t) do
      if type(k) == "string" and k:match(IDENT) and not seen[k] and (not methods_only or type(x) == "function") then
        seen[k] = true
        out[#out + 1] = k
      end
    end
  end
  if type(v) == "table" then add_from(v) end
  local mt = getmetatable(v)
  if type(v) == "string" then add_from(string) end
  for _ = 1, 4 do -- follow a short chain of __index tables (class hierarchies)
    if type(mt) ~= "table" then break end
    local index = rawget(mt, "__index")
    if type(index) == "function" then
      -- a C __index that dispatches to a methods table kept as an upvalue (tensors); a Lua
      -- function's upvalues are its own business (_ENV among them), so they are not listed
      if debug.getinfo(index, "S").what ~= "C" then break end
      local i = 1
      while true do
        local name, up = debug.getupvalue(index, i)
        if name == nil then break end
        add_from(up)
        i = i + 1
      end
      break
    end
    add_from(index)
    mt = getmetatable(index)
  end
  return out
end

-- The value named by a dotted path ("ms.meta"), read without running metamethods other than a
-- table's __index; nil when a step is missing.
local function resolve(path, env)
  local v = env
  for name in path:gmatch("[^.:]+") do
    if not name:match(IDENT) then return nil end
    local ok, x = pcall(function() return v[name] end)
    if not ok or x == nil then return nil end
    v = x
  end
  return v
end

--- Completion candidates for word (the text before the cursor, as far back as a Lua name path
-- goes): global names for "pri", fields for "ms.me", methods for "t:sh". Returns the full
-- completed words, sorted.
function M.complete(word, env)
  env = env or _G
  local path, sep, partial = word:match("^(.*)([.:])([%w_]*)$")
  local names
  if path == nil then
    partial, path, sep = word, nil, ""
    names = fields(env)
    for k in pairs(KEYWORDS) do names[#names + 1] = k end
  else
    if not path:match("^[%a_][%w_.]*$") then return {} end
    local v = resolve(path, env)
    if v == nil then return {} end
    names = fields(v, sep == ":")
  end
  local out = {}
  for _, k in ipairs(names) do
    if k:sub(1, #partial) == partial then out[#out + 1] = (path or "") .. sep .. k end
  end
  table.sort(out)
  return out
end

return M
