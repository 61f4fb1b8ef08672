-- wrk script: POST a realistic Messages API request. STREAM=1 in the environment -> "stream": true.
local stream = os.getenv("STREAM") == "1"
local system = string.rep("You are a careful assistant for an accounting team. Answer concisely. ", 6)
local history = string.rep("Earlier turn: the user asked about quarterly invoices and the assistant summarised them. ", 4)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = "sk-ant-api03-benchmark-key-not-real"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.body = '{"model":"claude-sonnet-4-5-20250929","max_tokens":1024,' ..
  (stream and '"stream":true,' or '') ..
  '"system":"' .. system .. '",' ..
  '"metadata":{"user_id":"user-1234"},"temperature":0.2,' ..
  '"messages":[{"role":"user","content":"' .. history .. '"},' ..
  '{"role":"assistant","content":"Understood. Which quarter should I look at?"},' ..
  '{"role":"user","content":[{"type":"text","text":"What is the capital of France? Reply in one sentence."}]}]}'
