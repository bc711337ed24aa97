package node

// For the tests of package node_test (the process networks).
var (
	StartOrigin      = startOrigin
	MeasureSOCKSExit = measureSOCKSExit
	NeedCurl         = needCurl
)

const SOCKSBenchSize = socksBenchSize
