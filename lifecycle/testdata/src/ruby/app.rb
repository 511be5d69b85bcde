client.fetch_boolean_value(flag_key: "dark-mode", default_value: false)
