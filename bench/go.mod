module github.com/caddy-mtls/caddy-mtls/bench

go 1.26.0

require (
	github.com/caddy-mtls/caddy-mtls v0.0.0-00010101000000-000000000000
	golang.org/x/sys v0.48.0
)

require (
	github.com/pavlo-v-chernykh/keystore-go/v4 v4.5.0 // indirect
	golang.org/x/crypto v0.57.0 // indirect
	software.sslmate.com/src/go-pkcs12 v0.7.4 // indirect
)

replace github.com/caddy-mtls/caddy-mtls => ../
