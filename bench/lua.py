"""wrk Lua scripts: each thread gets an id in setup() and its own slice of a file."""

from __future__ import annotations

from pathlib import Path
from string import Template

# Every thread's id (0-based) and its slice of a file's lines.
COMMON = """
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
function slice(path)
  local items, n = {}, 0
  for line in io.lines(path) do
    if n % $threads == id then table.insert(items, line) end
    n = n + 1
  end
  if #items == 0 then error("no lines for thread " .. id .. " in " .. path) end
  return items
end
"""

LOGIN_JSON = """
local emails, i = nil, 0
local headers = {["Content-Type"] = "application/json"}
function init(args) emails = slice("$emails") end
function request()
  i = i % #emails + 1
  local body = '{"email":"' .. emails[i] .. '","password":"$password"}'
  return wrk.format("POST", "$path", headers, body)
end
"""

LOGIN_FORM = """
local emails, i = nil, 0
local headers = {["Content-Type"] = "application/x-www-form-urlencoded"}
function init(args) emails = slice("$emails") end
function request()
  i = i % #emails + 1
  local user = emails[i]:gsub("@", "%%40")
  local body = "username=" .. user .. "&password=$password"
  return wrk.format("POST", "$path", headers, body)
end
"""

SIGNUP = """
local counter = 0
local headers = {["Content-Type"] = "application/json"}
function request()
  counter = counter + 1
  local email = "$prefix-" .. id .. "-" .. counter .. "@bench.example.com"
  local body = '{"email":"' .. email .. '","password":"$password"}'
  return wrk.format("POST", "$path", headers, body)
end
"""

BEARER = """
function init(args)
  local tokens = slice("$tokens")
  wrk.headers["Authorization"] = "Bearer " .. tokens[1]
end
"""

# One connection per thread, so each response answers that thread's last request.
REFRESH = """
local tokens, i = nil, 1
local headers = {["Content-Type"] = "application/json"}
function init(args) tokens = slice("$tokens") end
function request()
  local body = '{"refresh_token":"' .. tokens[i] .. '"}'
  return wrk.format("POST", "$path", headers, body)
end
function response(status, headers, body)
  if status == 200 then
    local fresh = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if fresh then tokens[i] = fresh end
  end
  i = i % #tokens + 1
end
"""


def script(body: str, threads: int, **values: str | Path) -> str:
    """COMMON + body, with $threads and every `values` filled in."""
    text = Template(COMMON + body)
    return text.substitute(threads=threads, **{k: str(v) for k, v in values.items()})


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path
