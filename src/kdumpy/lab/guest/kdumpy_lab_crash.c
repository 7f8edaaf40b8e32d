// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * kdumpy lab: crash the kernel on purpose, in one of the ways kdump must survive.
 *
 *   insmod kdumpy_lab_crash.ko action=oops|bug|warn|softlockup
 *
 * The action runs in the module's init, in insmod's process context. Each needs its panic sysctl
 * to turn into a panic (and so into a kdump): panic_on_oops for oops and bug, panic_on_warn for
 * warn, softlockup_panic for softlockup; the lab sets them before loading the module.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/preempt.h>
#include <linux/string.h>
#include <linux/bug.h>

static char *action = "none";
module_param(action, charp, 0444);
MODULE_PARM_DESC(action, "oops, bug, warn or softlockup");

/* Volatile, so the compiler keeps the load and the fault really happens at run time. */
static int *volatile kdumpy_lab_null;

static noinline void kdumpy_lab_oops(void)
{
	pr_emerg("kdumpy_lab_crash: dereferencing NULL\n");
	*kdumpy_lab_null = 1;
}

static noinline void kdumpy_lab_bug(void)
{
	pr_emerg("kdumpy_lab_crash: calling BUG()\n");
	BUG();
}

static noinline void kdumpy_lab_warn(void)
{
	pr_emerg("kdumpy_lab_crash: calling WARN()\n");
	WARN(1, "kdumpy_lab_crash: warning on purpose\n");
}

static noinline void kdumpy_lab_softlockup(void)
{
	pr_emerg("kdumpy_lab_crash: spinning with preemption off\n");
	/* Interrupts stay on, so the watchdog's hrtimer sees that its thread never runs here. */
	preempt_disable();
	for (;;)
		cpu_relax();
}

static int __init kdumpy_lab_crash_init(void)
{
	if (!strcmp(action, "oops"))
		kdumpy_lab_oops();
	else if (!strcmp(action, "bug"))
		kdumpy_lab_bug();
	else if (!strcmp(action, "warn"))
		kdumpy_lab_warn();
	else if (!strcmp(action, "softlockup"))
		kdumpy_lab_softlockup();
	else
		pr_err("kdumpy_lab_crash: unknown action '%s'\n", action);
	/* Still alive: the action did not panic (its sysctl was not set). Refuse to stay loaded. */
	return -EINVAL;
}

static void __exit kdumpy_lab_crash_exit(void)
{
}

module_init(kdumpy_lab_crash_init);
module_exit(kdumpy_lab_crash_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdumpy lab: crash the kernel on purpose");
