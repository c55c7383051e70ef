package apitypes

// EnrollRequest is what a device sends to enroll: POST /api/v1/enroll
// (docs/mqtt.md, "Enrollment"). CSRPEM asks for a client certificate.
type EnrollRequest struct {
	Token      string `json:"token"`
	HardwareID string `json:"hardware_id"`
	CSRPEM     string `json:"csr_pem,omitempty"`
}

// Enrollment is the answer to an enrollment: the device's MQTT
// credentials and where to use them. CertPEM is set when the request had
// a CSR; Path is the device's context, Tenant is empty for a shared
// device.
type Enrollment = EnrollmentOf[string]

// EnrollmentOf is Enrollment with its path of type P: the node uses its
// validated path type (model.Path), everyone else a string. The JSON is
// the same.
type EnrollmentOf[P ~string] struct {
	DeviceID     string `json:"device_id"`
	MQTTUsername string `json:"mqtt_username"`
	MQTTPassword string `json:"mqtt_password"`
	MQTTAddress  string `json:"mqtt_address"`
	CAPEM        string `json:"ca_pem"`
	CertPEM      string `json:"cert_pem,omitempty"`
	Path         P      `json:"path"`
	Tenant       string `json:"tenant"`
	Group        string `json:"group"`
	TopicPrefix  string `json:"topic_prefix"`
}
