package federation

import _ "github.com/quic-go/quic-go"
