-- wrk script: POST an OFREP evaluation with a fixed ~150-byte context.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"context":{"targetingKey":"u1","plan":"premium","country":"SE","email":"ann@example.com","age":33,"appVersion":"2.10.1"}}'
