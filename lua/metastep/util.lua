--- Helpers shared by the front library's modules.
local M = {}
-- Taken at load time: a host's sandbox (metastep_lua.h) hides the debug library from scripts.
local getinfo = debug.getinfo

-- Chunk names of the embedded front library ("@metastep/meta.lua").
local function is_library(info) return info.what == "C" or info.source:sub(1, 10) == "@metastep/" end

--- Raises prefix .. fmt:format(...) blamed on the first caller outside the front library.
function M.raise(prefix, fmt, ...)
  local msg = prefix .. fmt:format(...)
  local level = 2
  while true do
    local info = getinfo(level, "S")
    if not info or not is_library(info) then break end
    level = level + 1
  end
  error(msg, level)
end

--- Calls an engine binding f(...): its own messages (positioned inside the library, or not at
-- all) are raised again at the first caller outside the library; an error with a position of
-- its own (a callback's) or a non-string error object passes through unchanged.
function M.engine(f, ...)
  local r = table.pack(pcall(f, ...))
  if r[1] then return table.unpack(r, 2, r.n) end
  local err = r[2]
  if type(err) == "string" then
    local msg = err:match("^metastep/[%w_]+%.lua:%d+: (.*)$") or (not err:match("^[^\n]-:%d+: ") and err)
    if msg then M.raise("", "%s", msg) end
  end
  error(err, 0)
end

--- Raises "<fname>: unknown option 'k' (did you mean ...?)" for a key of opts (a table or nil)
-- not in known (a list of names), blamed on the first caller outside the library.
function M.check_keys(opts, known, fname)
  if type(opts) ~= "table" then return end
  local set = {}
  for _, k in ipairs(known) do set[k] = true end
  for k in pairs(opts) do
    if not set[k] then
      M.raise(fname, ": unknown option '%s'%s (expected %s)", tostring(k), M.suggest(k, known),
        table.concat(known, ", "))
    end
  end
end

--- A number for a message: NaN prints as "nan" on every platform (tostring gives "-nan" on x86).
function M.show(v)
  if type(v) == "number" and v ~= v then return "nan" end
  return tostring(v)
end

--- Levenshtein distance of two short strings (for "did you mean" suggestions).
function M.distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = {[0] = i}
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

--- " (did you mean 'x'?)" for the names within two edits of name, or "".
function M.suggest(name, names)
  if type(name) ~= "string" then return "" end
  local near = {}
  for _, n in ipairs(names) do
    if M.distance(name, n) <= math.max(1, math.min(2, #name // 3)) then near[#near + 1] = n end
  end
  table.sort(near)
  return #near > 0 and (" (did you mean '" .. table.concat(near, "', '") .. "'?)") or ""
end

return M
