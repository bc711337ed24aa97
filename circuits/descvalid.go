package circuits

import (
	"errors"
	"fmt"
	"time"

	"veil/proto"
)

// MaxDescriptorValidity bounds how long a descriptor may claim to hold: a
// descriptor names one onion key, which its node answers for at most
// OnionKeyLifetime plus OnionKeyGrace after making it. A descriptor valid
// for longer would outlive its key (every CREATE2 to it failing) or tell
// of a node that does not rotate its keys, whose past traffic a stolen
// key would open.
const MaxDescriptorValidity = OnionKeyLifetime + OnionKeyGrace + DescriptorClockSkew

// ErrDescriptorTooLong is the error of a descriptor valid for longer than
// MaxDescriptorValidity.
var ErrDescriptorTooLong = errors.New("circuits: descriptor valid for longer than an onion key lives")

// VerifyDescriptor is proto.NodeDescriptor.Verify plus the bound on its
// validity: what path selection, Build and Extend accept.
func VerifyDescriptor(d proto.NodeDescriptor, now time.Time) error {
	if err := d.Verify(now); err != nil {
		return err
	}
	if d.ValidUntil-d.ValidAfter > uint64(MaxDescriptorValidity/time.Second) {
		return fmt.Errorf("%w: node %s, valid for %v, at most %v", ErrDescriptorTooLong, d.ID.Short(),
			time.Duration(d.ValidUntil-d.ValidAfter)*time.Second, MaxDescriptorValidity)
	}
	return nil
}

func verifyDescriptor(d proto.NodeDescriptor, now time.Time) error { return VerifyDescriptor(d, now) }
