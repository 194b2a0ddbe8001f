package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/model"
)

// PublishNode writes the addresses set in a into the Node's annotations
// (a merge patch: other annotations stay).
func (v *View) PublishNode(ctx context.Context, name string, a model.NodeAddresses) error {
	annotations := map[string]string{}
	if a.IP.IsValid() {
		annotations[AnnotationIPv4] = a.IP.String()
	}
	if len(a.VTEPMAC) > 0 {
		annotations[AnnotationVXLANMAC] = a.VTEPMAC.String()
	}
	if a.VXLANTunnelIP.IsValid() {
		annotations[AnnotationVXLANIP] = a.VXLANTunnelIP.String()
	}
	if a.IPIPTunnelIP.IsValid() {
		annotations[AnnotationIPIPIP] = a.IPIPTunnelIP.String()
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": annotations}})
	if err != nil {
		return err
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := v.c.Patch(ctx, n, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("annotate node %s: %w", name, err)
	}
	return nil
}

// SetNetworkAvailable sets the Node's NetworkUnavailable condition to
// False: the node's pod network is programmed. The scheduler and the
// node lifecycle controller treat a node whose condition is True (or,
// for some cloud providers, missing) as unable to run pods.
func (v *View) SetNetworkAvailable(ctx context.Context, name string) error {
	now := metav1.NewTime(time.Now())
	cond := corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse,
		Reason: "WrenIsUp", Message: "Wren has programmed this node's pod network", LastTransitionTime: now, LastHeartbeatTime: now}
	sp, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return err
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	// A strategic merge patch merges conditions by type.
	if err := v.c.Status().Patch(ctx, n, client.RawPatch(types.StrategicMergePatchType, sp)); err != nil {
		return fmt.Errorf("set NetworkUnavailable=False on node %s: %w", name, err)
	}
	return nil
}
