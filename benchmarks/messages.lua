-- wrk script: POST a realistic Anthropic Messages request to /v1/messages.
-- ~2 KB system prompt, a 3-turn conversation (user, assistant, user), max_tokens 64.
-- Environment: STREAM=1 adds "stream": true; API_KEY sets x-api-key (the simulator accepts any key).
local stream = os.getenv("STREAM") == "1"
local key = os.getenv("API_KEY") or "sk-ant-api03-benchmark-key-not-real"
local system = string.rep(
  "You are a careful assistant for the accounting team of a mid-sized company. Answer concisely, " ..
  "cite the invoice numbers you rely on, and say so when the data is not enough to answer. ", 12)
wrk.method = "POST"
wrk.path = "/v1/messages"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = key
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.body = '{"model":"claude-sonnet-4-5-20250929","max_tokens":64,' ..
  (stream and '"stream":true,' or '') ..
  '"system":"' .. system .. '",' ..
  '"metadata":{"user_id":"user-1234"},"temperature":0.2,' ..
  '"messages":[' ..
  '{"role":"user","content":"Earlier this quarter we received invoices 1041 to 1057 from Northwind. ' ..
  'Which of them are still unpaid?"},' ..
  '{"role":"assistant","content":"Invoices 1049, 1052 and 1057 are still open; the rest were paid in full."},' ..
  '{"role":"user","content":[{"type":"text","text":"What is the total amount still owed? Reply in one sentence."}]}' ..
  ']}'

-- No response() callback on purpose: it makes wrk hand every response to Lua, costing client CPU on a
-- 2-core box. Errors come from wrk's own "Non-2xx or 3xx responses" line (it counts status >= 400).
