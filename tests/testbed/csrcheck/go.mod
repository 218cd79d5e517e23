module meshtrace-testbed/csrcheck

go 1.26.0

require (
	google.golang.org/grpc v1.82.0
	istio.io/api v1.31.0-rc.0.0.20260824154656-b943409680a7
)

require (
	github.com/golang/protobuf v1.5.4 // indirect
	golang.org/x/net v0.53.0 // indirect
	golang.org/x/sys v0.43.0 // indirect
	golang.org/x/text v0.36.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260414002931-afd174a4e478 // indirect
	google.golang.org/protobuf v1.36.11 // indirect
)
