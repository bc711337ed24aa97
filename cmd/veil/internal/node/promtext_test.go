package node

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// A strict reader of the Prometheus text exposition format (version
// 0.0.4), enough to hold /metrics to it: metric and label names, label
// value escapes, float values, one TYPE per family given before its
// samples, a family's lines together, histograms with cumulative buckets
// ending at +Inf equal to _count, counters neither negative nor NaN.

// promFamily is one metric family.
type promFamily struct {
	typ    string             // counter, gauge, histogram, summary, untyped
	series map[string]float64 // by series key: name{label="v",...} with labels sorted
}

// promText is a parsed exposition.
type promText map[string]*promFamily

// value returns a series' value, and whether it is there.
func (p promText) value(series string) (float64, bool) {
	for _, f := range p {
		if v, ok := f.series[series]; ok {
			return v, true
		}
	}
	return 0, false
}

var errProm = errors.New("prometheus text")

func parsePromText(text string) (promText, error) {
	out := promText{}
	var done []string // families whose lines ended
	cur := ""
	start := func(fam string, line int) error {
		if fam == cur {
			return nil
		}
		if slices.Contains(done, fam) {
			return fmt.Errorf("%w: line %d: family %s continues after other families", errProm, line, fam)
		}
		if cur != "" {
			done = append(done, cur)
		}
		cur = fam
		return nil
	}
	for i, line := range strings.Split(text, "\n") {
		ln := i + 1
		if line == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "#"); ok {
			f := strings.Fields(rest)
			if len(f) < 2 || (f[0] != "HELP" && f[0] != "TYPE") {
				continue // a comment
			}
			if !validMetricName(f[1]) {
				return nil, fmt.Errorf("%w: line %d: bad metric name %q", errProm, ln, f[1])
			}
			if err := start(f[1], ln); err != nil {
				return nil, err
			}
			fam := out[f[1]]
			if fam == nil {
				fam = &promFamily{series: map[string]float64{}}
				out[f[1]] = fam
			}
			if f[0] == "TYPE" {
				if len(f) != 3 {
					return nil, fmt.Errorf("%w: line %d: TYPE wants a name and a type", errProm, ln)
				}
				switch {
				case fam.typ != "":
					return nil, fmt.Errorf("%w: line %d: second TYPE for %s", errProm, ln, f[1])
				case len(fam.series) > 0:
					return nil, fmt.Errorf("%w: line %d: TYPE of %s after its samples", errProm, ln, f[1])
				}
				switch f[2] {
				case "counter", "gauge", "histogram", "summary", "untyped":
					fam.typ = f[2]
				default:
					return nil, fmt.Errorf("%w: line %d: unknown type %q", errProm, ln, f[2])
				}
			}
			continue
		}
		name, labels, value, err := parsePromSample(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", errProm, ln, err)
		}
		famName := name
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suf); ok && out[base] != nil && (out[base].typ == "histogram" || out[base].typ == "summary") {
				famName = base
			}
		}
		if err := start(famName, ln); err != nil {
			return nil, err
		}
		fam := out[famName]
		if fam == nil {
			fam = &promFamily{typ: "untyped", series: map[string]float64{}}
			out[famName] = fam
		}
		key := seriesKey(name, labels)
		if _, dup := fam.series[key]; dup {
			return nil, fmt.Errorf("%w: line %d: series %s twice", errProm, ln, key)
		}
		if fam.typ == "counter" && (math.IsNaN(value) || value < 0) {
			return nil, fmt.Errorf("%w: line %d: counter %s is %v", errProm, ln, key, value)
		}
		fam.series[key] = value
	}
	for name, fam := range out {
		if fam.typ == "histogram" {
			if err := checkHistogram(name, fam); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// checkHistogram checks a histogram without labels of its own.
func checkHistogram(name string, fam *promFamily) error {
	type bucket struct{ le, n float64 }
	var bs []bucket
	for k, v := range fam.series {
		rest, ok := strings.CutPrefix(k, name+`_bucket{le="`)
		if !ok {
			continue
		}
		le, err := parsePromFloat(strings.TrimSuffix(rest, `"}`))
		if err != nil {
			return fmt.Errorf("%w: %s: bucket %s: %v", errProm, name, k, err)
		}
		bs = append(bs, bucket{le, v})
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmpFloat(a.le, b.le) })
	if len(bs) == 0 || !math.IsInf(bs[len(bs)-1].le, 1) {
		return fmt.Errorf("%w: %s: no +Inf bucket", errProm, name)
	}
	for i := 1; i < len(bs); i++ {
		if bs[i].n < bs[i-1].n {
			return fmt.Errorf("%w: %s: buckets not cumulative at le=%v", errProm, name, bs[i].le)
		}
	}
	if c, ok := fam.series[name+"_count"]; !ok || c != bs[len(bs)-1].n {
		return fmt.Errorf("%w: %s: _count %v differs from the +Inf bucket %v", errProm, name, c, bs[len(bs)-1].n)
	}
	if _, ok := fam.series[name+"_sum"]; !ok {
		return fmt.Errorf("%w: %s: no _sum", errProm, name)
	}
	return nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func validMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		ok := c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

func validLabelName(s string) bool { return validMetricName(s) && !strings.Contains(s, ":") }

// parsePromSample parses `name{l="v",...} value [timestamp]`.
func parsePromSample(line string) (string, [][2]string, float64, error) {
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return "", nil, 0, errors.New("no value")
	}
	name, rest := line[:i], line[i:]
	if !validMetricName(name) {
		return "", nil, 0, fmt.Errorf("bad metric name %q", name)
	}
	var labels [][2]string
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			if rest == "" {
				return "", nil, 0, errors.New("unterminated labels")
			}
			if rest[0] == '}' {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq <= 0 || !validLabelName(rest[:eq]) {
				return "", nil, 0, fmt.Errorf("bad label in %q", rest)
			}
			lname := rest[:eq]
			rest = rest[eq+1:]
			if rest == "" || rest[0] != '"' {
				return "", nil, 0, errors.New("label value not quoted")
			}
			var val strings.Builder
			j := 1
			for ; j < len(rest) && rest[j] != '"'; j++ {
				if rest[j] == '\\' {
					j++
					if j == len(rest) {
						break
					}
					switch rest[j] {
					case '\\', '"':
						val.WriteByte(rest[j])
					case 'n':
						val.WriteByte('\n')
					default:
						return "", nil, 0, fmt.Errorf("bad escape \\%c", rest[j])
					}
					continue
				}
				val.WriteByte(rest[j])
			}
			if j >= len(rest) {
				return "", nil, 0, errors.New("unterminated label value")
			}
			for _, l := range labels {
				if l[0] == lname {
					return "", nil, 0, fmt.Errorf("label %s twice", lname)
				}
			}
			labels = append(labels, [2]string{lname, val.String()})
			rest = rest[j+1:]
			if rest != "" && rest[0] == ',' {
				// Prometheus's own parser allows blanks before a label name.
				rest = strings.TrimLeft(rest[1:], " \t")
			} else if rest == "" || rest[0] != '}' {
				return "", nil, 0, errors.New("labels not separated by commas")
			}
		}
	}
	f := strings.Split(rest, " ")
	if len(f) < 2 || f[0] != "" || len(f) > 3 {
		return "", nil, 0, fmt.Errorf("want one space, a value and an optional timestamp after %s", name)
	}
	v, err := parsePromFloat(f[1])
	if err != nil {
		return "", nil, 0, err
	}
	if len(f) == 3 {
		if _, err := strconv.ParseInt(f[2], 10, 64); err != nil {
			return "", nil, 0, fmt.Errorf("bad timestamp %q", f[2])
		}
	}
	return name, labels, v, nil
}

func parsePromFloat(s string) (float64, error) {
	switch s {
	case "NaN":
		return math.NaN(), nil
	case "+Inf", "Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	}
	if strings.ContainsAny(s, "_xXpP") || strings.EqualFold(s, "inf") || strings.EqualFold(s, "infinity") || strings.EqualFold(s, "nan") {
		return 0, fmt.Errorf("bad value %q", s)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("bad value %q", s)
	}
	return v, nil
}

func seriesKey(name string, labels [][2]string) string {
	if len(labels) == 0 {
		return name
	}
	slices.SortFunc(labels, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	parts := make([]string, len(labels))
	for i, l := range labels {
		parts[i] = l[0] + "=" + strconv.Quote(l[1])
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

func TestParsePromText(t *testing.T) {
	good := "# HELP a_total\n# TYPE a_total counter\na_total{k=\"x\\\"y\"} 3\na_total{k=\"z\"} 4 1700000000000\n" +
		"# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\ng NaN\n"
	p, err := parsePromText(good)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := p.value(`a_total{k="x\"y"}`); !ok || v != 3 {
		t.Fatalf("a_total: %v %v", v, ok)
	}
	if p, err := parsePromText("i{a=\"1\", b=\"2\"} 1\n"); err != nil || p["i"].series[`i{a="1",b="2"}`] != 1 {
		t.Fatalf("blank after a comma: %v", err)
	}
	for _, bad := range []string{
		"a b",                                  // bad value
		"a{b=c} 1",                             // unquoted
		"a{b=\"c\" 1",                          // unterminated
		"a{b=\"c\",b=\"d\"} 1",                 // label twice
		"a{b=\"\\q\"} 1",                       // bad escape
		"a  1",                                 // two spaces
		"1a 1",                                 // bad name
		"# TYPE a counter\na -1",               // negative counter
		"# TYPE a counter\n# TYPE a counter\n", // TYPE twice
		"a 1\n# TYPE a gauge\n",                // TYPE after samples
		"a 1\nb 1\na{x=\"y\"} 2",               // family split
		"a 1\na 2",                             // series twice
		"# TYPE a flux\n",                      // unknown type
		"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1",                          // no +Inf
		"# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1", // not cumulative
		"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2", // count differs
		"a 1 x", // bad timestamp
	} {
		if _, err := parsePromText(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// FuzzParsePromText: no input makes the parser panic.
func FuzzParsePromText(f *testing.F) {
	f.Add("# TYPE a counter\na{b=\"c\"} 1\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n")
	f.Add("a{b=\"\\\\\"} NaN 12\n")
	f.Fuzz(func(t *testing.T, s string) { _, _ = parsePromText(s) })
}
